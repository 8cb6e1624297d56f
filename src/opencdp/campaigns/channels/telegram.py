"""Telegram through the Bot API ``sendMessage`` (https://core.telegram.org/bots/api#sendmessage).

``Message.to`` is the chat id. The Bot API answers ``{"ok": true, "result": {"message_id": ...}}``;
once it does the message is in the chat, so the result is ``delivered`` (bots get no delivery
receipts, there is nothing to wait for). Errors come as ``{"ok": false, "error_code", "description"}``:
429 carries ``parameters.retry_after``; 400 "chat not found" and 403 "bot was blocked by the user"
are permanent, the address goes to suppression.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from opencdp.campaigns.channels import _http
from opencdp.campaigns.channels.base import Channel, Message, SendResult, require

DEFAULT_BASE_URL = "https://api.telegram.org"


class TelegramChannel(Channel):
    name = "telegram"

    def __init__(self, token: str, *, base_url: str = DEFAULT_BASE_URL, parse_mode: str | None = "HTML",
                 config: Mapping[str, Any] | None = None) -> None:
        self.url = f"{base_url.rstrip('/')}/bot{token}/sendMessage"
        self.parse_mode = parse_mode
        self.client = _http.make_client(config or {}, self.name)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> TelegramChannel:
        token = require(config, "token", "telegram", "the bot token from @BotFather")
        return cls(str(token), base_url=str(config.get("base_url", DEFAULT_BASE_URL)),
                   parse_mode=config.get("parse_mode", "HTML"), config=config)

    def send(self, message: Message) -> SendResult:
        # Telegram messages have no subject or HTML body of their own: the text is the message,
        # formatted with the small HTML subset Telegram accepts when parse_mode is HTML.
        body: dict[str, Any] = {"chat_id": message.to, "text": message.text}
        if self.parse_mode:
            body["parse_mode"] = self.parse_mode
        if "reply_markup" in message.data:
            body["reply_markup"] = message.data["reply_markup"]
        response = _http.post(self.client, self.url, json=body)
        if isinstance(response, SendResult):
            return response
        answer = _http.json_body(response)
        if response.status_code == 200 and answer.get("ok"):
            return SendResult.delivered(str(answer.get("result", {}).get("message_id", "")) or None)
        description = str(answer.get("description") or response.text[:300])
        if response.status_code == 429:
            wait = answer.get("parameters", {}).get("retry_after")
            return SendResult.transient(description, float(wait) if wait is not None else _http.retry_after(
                response.headers))
        return _http.classify(response, f"telegram {response.status_code}: {description}")

    def close(self) -> None:
        self.client.close()
