"""``POST /m/receipts/{channel}``: delivery receipts, bounces and complaints posted by a provider.

Who may post them, per channel kind (what each provider itself offers):

* **sms** (Twilio): ``X-Twilio-Signature``, the base64 HMAC-SHA1 of the callback URL and the sorted
  form fields keyed with the channel's ``auth_token``. The URL signed is the channel's
  ``status_callback`` when it is set (the public URL Twilio was given: behind a proxy the URL
  this server sees differs), else this server's public URL (``campaign_base_url`` + path) or the
  request URL as seen here.
* **viber**: ``X-Viber-Content-Signature``, the hex HMAC-SHA256 of the raw body keyed with the
  bot's ``token`` (the channel's send token).
* **email** (DSN bounces and ARF complaints, posted by the mail server's bounce processor): a
  per-deployment secret, the channel's ``receipt_secret``, as ESPs do for their webhooks. Any one of
  ``?secret=<receipt_secret>`` in the URL, HTTP Basic auth with it as the password (the
  ``https://bounces:<secret>@host/m/receipts/email`` form), ``Authorization: Bearer <secret>``, or
  ``OpenCDP-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>`` (timestamped, five
  minutes' tolerance: what ``channels.webhook`` signs); an admin key with the ``write`` scope is
  accepted too. Without any: 401 naming what is missing; a wrong one: 403.

A channel that is a cascade takes the receipts of its steps at ``/m/receipts/{cascade}/{step kind}``.

Every parsed receipt goes to the store's receipt registry (``opencdp.campaigns.receipt_store``: a
cascade waiting for a delivery in any worker wakes up), the process's
:data:`~opencdp.campaigns.channels.receipts.RECEIPTS`, and :func:`opencdp.campaigns.feedback.apply`
(events, outbox state, suppressions); one naming only an address that left the channel (Viber's
``unsubscribed``) goes to :func:`~opencdp.campaigns.feedback.left_channel` (a consent opt-out). A
receipt naming a message we do not know is accepted and counted as ``unknown``: a provider would
otherwise retry it for days. Applying the same receipt twice writes its event once (message events
have stable ids).
"""

from __future__ import annotations

import base64
import binascii
import email
import email.policy
import hmac
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from opencdp.campaigns import feedback, receipt_store
from opencdp.campaigns.channels import receipts as parse
from opencdp.campaigns.channels.receipts import Receipt
from opencdp.campaigns.channels.webhook import SIGNATURE_HEADER, SignatureError, verify_signature
from opencdp.errors import AuthError, TerminalError
from opencdp.web.auth import authenticate

router = APIRouter(prefix="/receipts", tags=["message receipts"])
RECEIPT_KINDS = ("email", "sms", "viber")
MAX_BODY = 10 * 1024 * 1024  # a DSN may carry the whole original message back; more is no receipt


class UnknownChannel(TerminalError):
    code, status = "unknown_channel", 404


class MissingSignature(AuthError):
    code = "unauthorized"


class BadSignature(TerminalError):
    code, status = "bad_signature", 403


class BadReceipt(TerminalError):
    code, status = "invalid_receipt", 422


class EmptyBody(TerminalError):
    code, status = "empty_body", 400


class TooLarge(TerminalError):
    code, status = "too_large", 413


# -- which channel -------------------------------------------------------------------------------
def channel_config(channels: Mapping[str, Any], name: str, step: str | None = None) -> dict[str, Any]:
    """The settings of the channel (or cascade step) the receipt is for; 404 naming the fix when there is none."""
    config = channels.get(name)
    if not isinstance(config, Mapping):
        known = ", ".join(sorted(channels)) or "none is configured"
        raise UnknownChannel(f"no channel {name!r} is configured in campaign_channels (known: {known})", field="channel")
    if config.get("kind") == "cascade" and step is not None:
        for candidate in config.get("steps") or []:
            if isinstance(candidate, Mapping) and candidate.get("kind") == step:
                return {"kind": step, **dict(candidate.get("config") or {})}
        raise UnknownChannel(f"cascade {name!r} has no {step!r} step", field="step")
    if step is not None:
        raise UnknownChannel(f"channel {name!r} is not a cascade: post its receipts to /m/receipts/{name}", field="step")
    kind = config.get("kind")
    if kind not in RECEIPT_KINDS or (kind == "sms" and config.get("provider", "twilio") != "twilio"):
        hint = (f"; post a step's receipts to /m/receipts/{name}/<step kind>" if kind == "cascade" else "")
        raise UnknownChannel(f"channel {name!r} (kind {kind}) takes no delivery receipts here; receipts are accepted "
                             f"for email, sms (twilio) and viber channels{hint}", field="channel")
    return dict(config)


# -- who sent it ---------------------------------------------------------------------------------
def check_twilio(config: Mapping[str, Any], urls: list[str], form: Mapping[str, str], signature: str | None) -> None:
    if not signature:
        raise MissingSignature("a Twilio status callback needs its X-Twilio-Signature header", field="X-Twilio-Signature")
    token = str(config.get("auth_token", ""))
    if not token or not any(parse.verify_twilio(token, url, form, signature) for url in urls):
        raise BadSignature("X-Twilio-Signature does not match: check the channel's auth_token, and set its "
                           "status_callback to the exact public URL Twilio posts to", field="X-Twilio-Signature")


def check_viber(config: Mapping[str, Any], body: bytes, signature: str | None) -> None:
    if not signature:
        raise MissingSignature("a Viber callback needs its X-Viber-Content-Signature header",
                               field="X-Viber-Content-Signature")
    token = str(config.get("token") or config.get("auth_token") or "")
    if not token or not parse.verify_viber(token, body, signature):
        raise BadSignature("X-Viber-Content-Signature does not match the body signed with the channel's bot token",
                           field="X-Viber-Content-Signature")


def check_mail_secret(request: Request, config: Mapping[str, Any], name: str, body: bytes) -> None:
    """The receipt secret in the URL, Basic password, Bearer token or a body signature; else an admin key."""
    secret = str(config.get("receipt_secret") or "")
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    presented = request.query_params.get("secret")
    if scheme.lower() == "bearer":
        presented = presented or value.strip()
    elif scheme.lower() == "basic":
        presented = presented or _basic_password(value)
    signature = request.headers.get(SIGNATURE_HEADER)
    if secret and presented and hmac.compare_digest(presented.encode(), secret.encode()):
        return
    if secret and signature:
        try:
            verify_signature(secret, body, signature)
            return
        except SignatureError as e:
            raise BadSignature(f"{SIGNATURE_HEADER}: {e}", field=SIGNATURE_HEADER) from None
    if header or request.headers.get("x-api-key"):
        try:
            if authenticate(request).allows("write"):
                return
        except AuthError:  # not an admin key either: say what a mail receipt needs
            pass
    how = (f"post to /m/receipts/{name}?secret=<receipt_secret>, or send it as the Basic auth password, as "
           f"`Authorization: Bearer <receipt_secret>` or as {SIGNATURE_HEADER}: t=<unix>,v1=<HMAC-SHA256>; "
           "an admin key with the write scope also works")
    if not secret:
        how = f"set campaign_channels.{name}.receipt_secret and {how}"
    if presented or header:
        raise BadSignature(f"the receipt secret or key does not match; {how}", field="secret")
    raise MissingSignature(f"mail receipts need the channel's receipt secret; {how}", field="secret")


def _basic_password(value: str) -> str:
    try:
        return base64.b64decode(value.strip(), validate=True).decode().partition(":")[2]
    except (binascii.Error, UnicodeDecodeError):
        return ""


# -- what it says --------------------------------------------------------------------------------
def twilio_form(body: bytes) -> dict[str, str]:
    try:
        return dict(parse_qsl(body.decode(), keep_blank_values=True))
    except UnicodeDecodeError:
        raise BadReceipt("a Twilio callback is a form (application/x-www-form-urlencoded) in UTF-8", field="body") from None


def twilio_receipts(form: Mapping[str, str]) -> list[Receipt]:
    for name in ("MessageSid", "MessageStatus"):
        if not form.get(name):
            raise BadReceipt(f"the Twilio status callback has no `{name}` field", field=name)
    return parse.parse_twilio(form)  # an unknown status (a newer Twilio one) is accepted and ignored


def viber_receipts(body: bytes) -> list[Receipt]:
    try:
        event = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadReceipt("a Viber callback is a JSON object; the body is not JSON", field="body") from None
    if not isinstance(event, dict) or not isinstance(event.get("event"), str):
        raise BadReceipt('a Viber callback is a JSON object with an "event" field', field="event")
    if event["event"] in ("delivered", "seen", "failed") and event.get("message_token") is None:
        raise BadReceipt(f"the Viber {event['event']!r} event has no `message_token`", field="message_token")
    return parse.parse_viber(event)  # webhook, subscribed, conversation_started, message: nothing to record


def mail_receipts(body: bytes) -> list[Receipt]:
    mail = email.message_from_bytes(body, policy=email.policy.default)
    if mail.get_content_type() != "multipart/report":
        raise BadReceipt(f"a mail receipt is a DSN (RFC 3464) or ARF (RFC 5965) report of type multipart/report; "
                         f"this message is {mail.get_content_type()}", field="body")
    return parse.parse_dsn(body)


# -- the endpoint --------------------------------------------------------------------------------
@router.post("/{channel}", summary="Delivery receipts, bounces and complaints from a provider", include_in_schema=False)
async def receipts(request: Request, channel: str) -> dict[str, int]:
    return await _receive(request, channel, None)


@router.post("/{channel}/{step}", summary="Receipts of one step of a cascade channel", include_in_schema=False)
async def step_receipts(request: Request, channel: str, step: str) -> dict[str, int]:
    return await _receive(request, channel, step)


async def _receive(request: Request, channel: str, step: str | None) -> dict[str, int]:
    settings = request.app.state.settings
    config = channel_config(settings.campaign_channels, channel, step)
    kind = str(config["kind"])
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise TooLarge(f"a receipt is at most {MAX_BODY // 2**20} MiB; this body is {int(declared)} bytes", field="body")
    body = await request.body()
    if len(body) > MAX_BODY:
        raise TooLarge(f"a receipt is at most {MAX_BODY // 2**20} MiB", field="body")
    if kind == "sms":
        form = twilio_form(body)
        check_twilio(config, _callback_urls(request, config, settings.campaign_base_url), form,
                     request.headers.get("X-Twilio-Signature"))
        found = twilio_receipts(form)
    elif kind == "viber":
        check_viber(config, body, request.headers.get("X-Viber-Content-Signature"))
        found = viber_receipts(_non_empty(body))
    else:
        check_mail_secret(request, config, channel, body)
        found = mail_receipts(_non_empty(body))
    backend = request.app.state.backend
    known = [r for r in found if r.provider_message_id]
    for receipt in known:
        parse.RECEIPTS.record(receipt)  # cascades in this process built without a store
    if known:  # and in the store, where a cascade waiting in any worker finds it
        await run_in_threadpool(receipt_store.record_all, backend, known)
    counts: dict[str, int] = await run_in_threadpool(feedback.apply, backend, kind, [r for r in found if r.provider_message_id])
    counts["unsubscribed"] = await run_in_threadpool(feedback.left_channel, backend, kind, found)
    return counts


def _callback_urls(request: Request, config: Mapping[str, Any], base_url: str) -> list[str]:
    if config.get("status_callback"):
        return [str(config["status_callback"])]
    path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return list(dict.fromkeys([base_url.rstrip("/") + path, str(request.url)]))


def _non_empty(body: bytes) -> bytes:
    if not body.strip():
        raise EmptyBody("the receipt body is empty", field="body")
    return body
