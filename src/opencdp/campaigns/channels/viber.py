"""Viber through the REST Bot API ``send_message`` (https://developers.viber.com/docs/api/rest-bot-api/).

``POST {base_url}/pa/send_message`` with header ``X-Viber-Auth-Token`` and a JSON body
``{"receiver", "min_api_version", "sender": {"name", "avatar"}, "tracking_data", "type": "text", "text"}``.
Viber answers HTTP 200 even for errors; the outcome is the body's ``status`` (0 = ok, with the
``message_token`` that later delivery callbacks name). Delivery arrives as a callback event
``delivered`` / ``seen`` / ``failed`` on the bot's webhook (see receipts.parse_viber); a cascade
waits for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opencdp.campaigns.channels import _http
from opencdp.campaigns.channels.base import Channel, Message, SendResult, require

DEFAULT_BASE_URL = "https://chatapi.viber.com"

# The recipient cannot get Viber bot messages: suppress the address.
RECIPIENT_GONE = {5: "receiverNotRegistered", 6: "receiverNotSubscribed", 11: "receiverNoSuitableDevice"}
# The request itself is wrong; resending it will fail the same way.
BAD_REQUEST = {1: "invalidUrl", 3: "badData", 4: "missingData", 13: "apiVersionNotSupported",
               14: "incompatibleWithVersion"}
# Everything else (2 invalidAuthToken, 7-10 account blocked / not found / suspended / webhook not
# set, 12 tooManyRequests, 15-17 account not authorized / in-app alias / business) is the sender's
# side: retry later, never suppress the recipient for it.
ACCOUNT_WAIT_S = 300.0


class ViberChannel(Channel):
    name = "viber"

    def __init__(self, token: str, sender_name: str, *, sender_avatar: str | None = None,
                 base_url: str = DEFAULT_BASE_URL, config: Mapping[str, Any] | None = None) -> None:
        self.token = token
        self.sender: dict[str, str] = {"name": sender_name[:28]}  # Viber limits the sender name to 28 characters
        if sender_avatar:
            self.sender["avatar"] = sender_avatar
        self.url = f"{base_url.rstrip('/')}/pa/send_message"
        self.client = _http.make_client(config or {}, self.name)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ViberChannel:
        return cls(str(require(config, "token", "viber", "the bot's authentication token (X-Viber-Auth-Token)")),
                   str(require(config, "sender_name", "viber", "the sender name shown to the user")),
                   sender_avatar=config.get("sender_avatar"),
                   base_url=str(config.get("base_url", DEFAULT_BASE_URL)), config=config)

    def payload(self, message: Message) -> dict[str, Any]:
        body: dict[str, Any] = {
            "receiver": message.to,
            "min_api_version": 1,
            "sender": self.sender,
            "tracking_data": message.message_id,
            "type": "text",
            "text": message.text,
        }
        if "keyboard" in message.data:
            body["keyboard"] = message.data["keyboard"]
        return body

    def send(self, message: Message) -> SendResult:
        response = _http.post(self.client, self.url, json=self.payload(message),
                              headers={"X-Viber-Auth-Token": self.token})
        if isinstance(response, SendResult):
            return response
        if response.status_code != 200:
            return _http.classify(response)
        answer = _http.json_body(response)
        status = answer.get("status")
        error = f"viber {status}: {answer.get('status_message', '')}"
        if status == 0:
            return SendResult.sent(str(answer.get("message_token")))
        if status in RECIPIENT_GONE or status in BAD_REQUEST:
            return SendResult.permanent(error)
        if status == 12:
            return SendResult.transient(error, _http.retry_after(response.headers) or 1.0)
        return SendResult.transient(error, ACCOUNT_WAIT_S)

    def close(self) -> None:
        self.client.close()
