"""Channel adapters: email (SMTP), SMS, Viber, Telegram, FCM push, Web Push, webhooks, the inbox.

The contract is in :mod:`.base` (Message, SendResult, Channel, build_channel); each adapter is one
module with a ``from_config`` constructor. Delivery callbacks are normalised in :mod:`.receipts`.
"""

from opencdp.campaigns.channels.base import (
    ADAPTERS,
    STATUSES,
    Channel,
    ChannelConfigError,
    Message,
    SendResult,
    build_channel,
)

__all__ = ["ADAPTERS", "STATUSES", "Channel", "ChannelConfigError", "Message", "SendResult", "build_channel"]
