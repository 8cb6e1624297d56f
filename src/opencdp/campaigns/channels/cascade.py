"""Fallback cascades: try one channel, and the next when the first did not deliver in time.

Example: Viber first, SMS when Viber has not confirmed delivery within 60 s. A step counts as
undelivered when its send returns transient or permanent, or when it returned ``sent`` but no
final delivery receipt (see :class:`~.receipts.ReceiptRegistry`, filled by the receipt webhook)
said ``delivered``/``read`` within the step's ``wait_s``; a ``delivered`` answer (Telegram, the
inbox, a webhook) ends the cascade at once. ``wait_s = 0`` on a step accepts ``sent`` as enough.

The model is synchronous: ``send`` blocks while it waits, so a broadcast through a cascade runs
many sends in parallel (``send_many`` uses a thread per message up to ``parallelism``).

Each step's address is ``message.data["addresses"][<step channel name>]`` (a profile has a
phone for SMS and a Viber id for Viber), falling back to ``message.to``; a step's own text may
be given in ``message.data["texts"][<step channel name>]`` (an SMS is shorter than a Viber message).
The result names the channel that carried the message in ``SendResult.channel``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from opencdp.campaigns.channels.base import (
    Channel,
    ChannelConfigError,
    Message,
    SendResult,
    Status,
    build_channel,
)
from opencdp.campaigns.channels.receipts import RECEIPTS, ReceiptRegistry


@dataclass(frozen=True)
class CascadeStep:
    channel: Channel
    wait_s: float = 0.0


class Cascade(Channel):
    name = "cascade"

    def __init__(self, steps: Sequence[CascadeStep], receipts: ReceiptRegistry, *, parallelism: int = 64) -> None:
        if not steps:
            raise ChannelConfigError("a cascade needs at least one step", field="steps")
        self.steps = list(steps)
        self.receipts = receipts
        self.parallelism = parallelism

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Cascade:
        """``{"steps": [{"kind", "config", "wait_s"}]}``; ``receipts`` defaults to the process's registry.

        A ``backend`` given to the cascade is passed on to its steps (an inbox step needs it).
        """
        steps = []
        for i, step in enumerate(config.get("steps") or []):
            if not isinstance(step, Mapping) or "kind" not in step:
                raise ChannelConfigError(f"cascade step {i} needs a 'kind' and its 'config'", field=f"steps[{i}]")
            if step["kind"] == "cascade":
                raise ChannelConfigError("a cascade step cannot be another cascade", field=f"steps[{i}].kind")
            step_config = dict(step.get("config", {}))
            if "backend" in config:
                step_config.setdefault("backend", config["backend"])
            if step["kind"] == "webhook" and "allowed_networks" in config:
                step_config.setdefault("allowed_networks", config["allowed_networks"])
            steps.append(CascadeStep(build_channel(step["kind"], step_config), float(step.get("wait_s", 0))))
        receipts = config.get("receipts") or RECEIPTS
        if not isinstance(receipts, ReceiptRegistry):
            raise ChannelConfigError("cascade receipts must be a ReceiptRegistry", field="receipts")
        return cls(steps, receipts, parallelism=int(config.get("parallelism", 64)))

    def step_message(self, message: Message, channel: Channel) -> Message:
        addresses = message.data.get("addresses") or {}
        texts = message.data.get("texts") or {}
        return dataclasses.replace(message, channel=channel.name, to=str(addresses.get(channel.name, message.to)),
                                   text=str(texts.get(channel.name, message.text)))

    def send(self, message: Message) -> SendResult:
        failures: list[SendResult] = []
        for i, step in enumerate(self.steps):
            last = i == len(self.steps) - 1
            result = dataclasses.replace(step.channel.send(self.step_message(message, step.channel)),
                                         channel=step.channel.name)
            if result.status == "delivered" or (result.status == "sent" and (last or step.wait_s <= 0)):
                return result
            if result.status == "sent":
                receipt = self.receipts.wait(result.provider_message_id or "", step.wait_s)
                if receipt is not None and receipt.status in ("delivered", "read"):
                    return dataclasses.replace(result, status="delivered")
                why = f"no delivery receipt within {step.wait_s:g} s" if receipt is None else \
                    f"receipt {receipt.status}: {receipt.error}"
                failures.append(SendResult.transient(f"{step.channel.name}: {why}"))
                continue
            failures.append(dataclasses.replace(result, error=f"{step.channel.name}: {result.error}"))
        # Nothing got through: permanent only when every step said so (one live channel is enough
        # to keep trying the profile), with the soonest retry a step asked for.
        status: Status = "permanent" if all(f.status == "permanent" for f in failures) else "transient"
        waits = [f.retry_after_s for f in failures if f.retry_after_s is not None]
        return SendResult(status, None, "; ".join(f.error for f in failures),
                          min(waits) if waits and status == "transient" else None, failures[-1].channel)

    def send_many(self, messages: Sequence[Message]) -> list[SendResult]:
        if len(messages) <= 1:
            return [self.send(m) for m in messages]
        with ThreadPoolExecutor(min(self.parallelism, len(messages)), thread_name_prefix="cascade") as pool:
            return list(pool.map(self.send, messages))

    def close(self) -> None:
        for step in self.steps:
            step.channel.close()
