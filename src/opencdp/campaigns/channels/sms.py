"""SMS through Twilio's Messages API, or any HTTP SMS gateway described in the config.

Twilio (``provider: twilio``, https://www.twilio.com/docs/messaging/api/message-resource):
``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` form-encoded ``To``, ``From`` (or
``MessagingServiceSid``), ``Body`` and ``StatusCallback``, HTTP Basic auth with the account SID and
auth token. It answers 201 with the message resource (``sid`` "SM...", ``status`` "queued"), or an
error object ``{"code", "message", "more_info", "status"}``: 400 with codes such as 21211 (invalid
To number) or 21610 (recipient replied STOP) is permanent, 429 (code 20429) and 5xx transient.
Delivery comes later to ``StatusCallback`` (see receipts.parse_twilio).

Generic gateway (``provider: http``): ``url``, optional ``headers``, ``format`` json or form, and a
``body`` template whose string values may contain ``{to}``, ``{text}`` and ``{message_id}``;
``id_field`` is the dotted path of the provider's message id in the JSON answer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from opencdp.campaigns.channels import _http
from opencdp.campaigns.channels.base import (
    Channel,
    ChannelConfigError,
    Message,
    SendResult,
    require,
)

TWILIO_BASE_URL = "https://api.twilio.com"
E164 = re.compile(r"^\+[1-9]\d{6,14}$")
# Twilio errors that say "retry later" although they come with HTTP 4xx.
TWILIO_TRANSIENT_CODES = frozenset({20429})


class SmsChannel(Channel):
    """Base of the SMS adapters: checks the E.164 number before spending a request on it."""

    name = "sms"

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.client = _http.make_client(config, self.name)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> SmsChannel:
        provider = config.get("provider", "twilio")
        if provider == "twilio":
            return TwilioSms(config)
        if provider == "http":
            return HttpSms(config)
        raise ChannelConfigError(f"sms provider {provider!r} is not known; use twilio or http", field="provider")

    def send(self, message: Message) -> SendResult:
        if not E164.match(message.to):
            return SendResult.permanent(f"{message.to!r} is not an E.164 phone number (+ and 7-15 digits)")
        return self.submit(message)

    def submit(self, message: Message) -> SendResult:
        raise NotImplementedError

    def close(self) -> None:
        self.client.close()


class TwilioSms(SmsChannel):
    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        self.account_sid = str(require(config, "account_sid", "sms", "the Twilio Account SID (AC...)"))
        self.auth_token = str(require(config, "auth_token", "sms", "the Twilio auth token"))
        self.sender = config.get("from")
        self.messaging_service_sid = config.get("messaging_service_sid")
        if not self.sender and not self.messaging_service_sid:
            raise ChannelConfigError("sms channel (twilio) needs 'from' (a sender number or alphanumeric id) "
                                     "or 'messaging_service_sid'", field="from")
        self.status_callback = config.get("status_callback")
        base = str(config.get("base_url", TWILIO_BASE_URL)).rstrip("/")
        self.url = f"{base}/2010-04-01/Accounts/{self.account_sid}/Messages.json"

    def submit(self, message: Message) -> SendResult:
        form = {"To": message.to, "Body": message.text}
        if self.messaging_service_sid:
            form["MessagingServiceSid"] = str(self.messaging_service_sid)
        else:
            form["From"] = str(self.sender)
        if self.status_callback:
            form["StatusCallback"] = str(self.status_callback)
        response = _http.post(self.client, self.url, data=form, auth=(self.account_sid, self.auth_token))
        if isinstance(response, SendResult):
            return response
        answer = _http.json_body(response)
        if response.status_code in (200, 201) and answer.get("sid"):
            if answer.get("status") == "failed":
                return SendResult.permanent(f"twilio {answer.get('error_code')}: {answer.get('error_message')}")
            return SendResult.sent(str(answer["sid"]))
        error = f"twilio {answer.get('code', response.status_code)}: {answer.get('message', response.text[:300])}"
        if answer.get("code") in TWILIO_TRANSIENT_CODES:
            return SendResult.transient(error, _http.retry_after(response.headers))
        if response.status_code == 401:
            # Wrong credentials are the operator's problem, not the recipient's: never suppress for it.
            return SendResult.transient(error, 300.0)
        return _http.classify(response, error)


class HttpSms(SmsChannel):
    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        self.url = str(require(config, "url", "sms", "the gateway's send URL"))
        self.headers = dict(config.get("headers", {}))
        self.format = config.get("format", "json")
        if self.format not in ("json", "form"):
            raise ChannelConfigError("sms channel (http): format must be json or form", field="format")
        self.body = dict(require(config, "body", "sms", "the request body template, e.g. {'to': '{to}', "
                                                        "'text': '{text}'}"))
        self.id_field = str(config.get("id_field", "id"))

    def render(self, message: Message) -> dict[str, Any]:
        values = {"{to}": message.to, "{text}": message.text, "{message_id}": message.message_id}

        def fill(value: Any) -> Any:
            if isinstance(value, str):
                for placeholder, actual in values.items():
                    value = value.replace(placeholder, actual)
            return value

        return {key: fill(value) for key, value in self.body.items()}

    def submit(self, message: Message) -> SendResult:
        body = self.render(message)
        kwargs: dict[str, Any] = {"json": body} if self.format == "json" else {"data": body}
        response = _http.post(self.client, self.url, headers=self.headers, **kwargs)
        if isinstance(response, SendResult):
            return response
        if not response.is_success:
            return _http.classify(response)
        return SendResult.sent(_dig(_http.json_body(response), self.id_field))


def _dig(answer: Mapping[str, Any], path: str) -> str | None:
    value: Any = answer
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return None if value is None else str(value)

