"""Tracking: signed message tokens, trackable links, and message events on the profile.

Every message carries one **token**: its outbox key and variant, signed with the store's
campaign secret (HMAC-SHA256), so the open pixel, the click redirect and the unsubscribe link
need no lookup and cannot be forged or pointed at someone else. Links are rewritten after
rendering: UTM tags are added (``utm_source=opencdp``, ``utm_medium=<channel>``,
``utm_campaign=<campaign>``, ``utm_content=<variant>``) and the link goes through
``/m/c/<token>?u=<url>&k=<signature of token and url>``: the redirect only ever goes to a URL
that was in the message (no open redirect).

The redirect appends ``ocdp_click=<click token>`` to the destination: a per-profile signed value
that identity resolution reads as a ``click`` identifier (``opencdp.identity.identifiers``). The
click event itself goes through the identity stage carrying the profile's own identifier, the
click token and the browser's anonymous id, so the graph ties them together: the shop's tracker
then reports the visit with that token in the page URL and the visitor is recognised without
logging in.

Message events (``Message Sent``, ``Message Delivered``, ``Message Opened``, ``Message Clicked``,
``Message Unsubscribed``, ``Message Bounced``, ``Message Failed``) are events rows with
``properties`` ``campaign_id``, ``step_id``, ``variant``, ``channel``, ``message_id``: segments and
reports read them like any other event.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import hmac
import os
import re
import secrets
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import msgspec
import pyarrow as pa

from opencdp.errors import TerminalError
from opencdp.storage.base import Backend, LoadBatch
from opencdp.storage.schema import EVENTS, ORDER_LINES

SENT, DELIVERED, OPENED, CLICKED = "Message Sent", "Message Delivered", "Message Opened", "Message Clicked"
UNSUBSCRIBED, BOUNCED, FAILED, COMPLAINED = "Message Unsubscribed", "Message Bounced", "Message Failed", "Message Complained"
MESSAGE_EVENTS = (SENT, DELIVERED, OPENED, CLICKED, UNSUBSCRIBED, BOUNCED, FAILED, COMPLAINED)
SOURCE = "campaigns"
_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode
_HREF = re.compile(r"""(<a\b[^>]*?\bhref\s*=\s*)(["'])(https?://[^"']+)\2""", re.IGNORECASE)


class BadToken(TerminalError):
    status = 404
    code = "bad_token"


@dataclass(frozen=True)
class MessageRef:
    """What a token says about a message: enough to write its events without a lookup."""

    message_id: str
    campaign_id: str
    step_id: str
    profile_id: str
    variant: str
    channel: str
    topic: str = "marketing"

    def properties(self) -> dict[str, Any]:
        return {
            "campaign_id": self.campaign_id, "step_id": self.step_id, "variant": self.variant,
            "channel": self.channel, "message_id": self.message_id,
        }


class Signer:
    """HMAC signing with the store's campaign secret (``<data_dir>/campaign_secret``, made on first use)."""

    def __init__(self, secret: bytes) -> None:
        self.secret = secret

    @classmethod
    def for_data_dir(cls, data_dir: Path, configured: str = "") -> Signer:
        if configured:
            return cls(configured.encode())
        path = data_dir / "campaign_secret"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(32))
        return cls(path.read_text().strip().encode())

    def sign(self, text: str, size: int = 16) -> str:
        digest = hmac.new(self.secret, text.encode(), hashlib.sha256).digest()[:size]
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def token(self, ref: MessageRef) -> str:
        payload = _encode([ref.message_id, ref.campaign_id, ref.step_id, ref.profile_id, ref.variant, ref.channel, ref.topic])
        body = base64.urlsafe_b64encode(payload).rstrip(b"=").decode()
        return f"{body}.{self.sign(body)}"

    def read(self, token: str) -> MessageRef:
        body, _, signature = token.partition(".")
        if not body or not hmac.compare_digest(signature, self.sign(body)):
            raise BadToken("the link is not valid (it was changed or comes from another installation)")
        try:
            values = _decode(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
            return MessageRef(*values)
        except (ValueError, TypeError, msgspec.DecodeError):
            raise BadToken("the link is not valid") from None

    def link_key(self, token: str, url: str) -> str:
        return self.sign(f"{token}|{url}", 10)

    def click_token(self, profile_id: str) -> str:
        """The per-profile value identity resolution reads as a ``click`` identifier."""
        return f"{profile_id}.{self.sign('click|' + profile_id, 12)}"


@functools.lru_cache(maxsize=4096)
def _tagged(url: str, campaign_id: str, channel: str, variant: str) -> tuple[str, str]:
    """The URL with UTM tags, and that quoted for the redirect's query: the same for every recipient."""
    tagged = with_utm(url, campaign_id, channel, variant)
    return tagged, quote(tagged, safe="")


def with_utm(url: str, campaign_id: str, channel: str, variant: str) -> str:
    """The URL with UTM tags added (tags already in it are kept)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    present = {k for k, _ in query}
    tags = {"utm_source": "opencdp", "utm_medium": channel, "utm_campaign": campaign_id, "utm_content": variant}
    query += [(k, v) for k, v in tags.items() if k not in present]
    return urlunsplit(parts._replace(query=urlencode(query)))


def with_parameter(url: str, name: str, value: str) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != name] + [(name, value)]
    return urlunsplit(parts._replace(query=urlencode(query)))


@dataclass(frozen=True)
class Links:
    """Tracking URLs of one message."""

    base_url: str
    signer: Signer
    ref: MessageRef

    @property
    def token(self) -> str:
        return self.signer.token(self.ref)

    def click(self, url: str, token: str | None = None) -> str:
        token = token or self.token
        tagged, quoted = _tagged(url, self.ref.campaign_id, self.ref.channel, self.ref.variant)
        return f"{self.base_url}/m/c/{token}?u={quoted}&k={self.signer.link_key(token, tagged)}"

    def urls(self, token: str | None = None) -> dict[str, str]:
        token = token or self.token
        return {
            "unsubscribe_url": f"{self.base_url}/m/u/{token}",
            "preferences_url": f"{self.base_url}/m/p/{token}",
            "open_pixel_url": f"{self.base_url}/m/o/{token}.gif",
        }


def rewrite_links(html: str, links: Links, token: str) -> str:
    """Every ``<a href="http...">`` through the click redirect, and the open pixel before ``</body>``."""
    own = links.base_url + "/m/"

    def replace(match: re.Match[str]) -> str:
        url = match.group(3).replace("&amp;", "&")
        if url.startswith(own):  # unsubscribe and preference links are already ours
            return match.group(0)
        return f"{match.group(1)}{match.group(2)}{links.click(url, token).replace('&', '&amp;')}{match.group(2)}"

    html = _HREF.sub(replace, html)
    pixel = f'<img src="{links.base_url}/m/o/{token}.gif" width="1" height="1" alt="" style="display:none">'
    lower = html.lower()
    at = lower.rfind("</body>")
    return html[:at] + pixel + html[at:] if at >= 0 else html + pixel


def rewrite_text_links(text: str, links: Links, token: str) -> str:
    """Plain-text links (SMS, messengers) through the click redirect."""
    own = links.base_url + "/m/"
    return re.sub(
        r"https?://[^\s<>\"']+",
        lambda m: m.group(0) if m.group(0).startswith(own) else links.click(m.group(0), token),
        text,
    )


# -- message events ----------------------------------------------------------------------------
def event_rows(
    name: str,
    refs: Sequence[MessageRef],
    now: dt.datetime,
    *,
    extra: Sequence[Mapping[str, Any]] | None = None,
    unique: bool = True,
) -> pa.Table:
    """Events rows ``name`` for messages; ``unique``: one such event per message (stable ids)."""
    count = len(refs)
    ids, props = [], []
    for i, ref in enumerate(refs):
        properties = ref.properties()
        if extra is not None and extra[i]:
            properties.update(extra[i])
        props.append(_encode(properties).decode())
        ids.append(f"msg:{name.lower().replace(' ', '_')}:{ref.message_id}" if unique else f"msg:{uuid.uuid4().hex}")
    columns = {
        "message_id": pa.array(ids, pa.string()),
        "type": pa.array(["track"] * count, pa.string()),
        "event": pa.array([name] * count, pa.string()),
        "timestamp": pa.array([now] * count, EVENTS.arrow_schema.field("timestamp").type),
        "received_at": pa.array([now] * count, EVENTS.arrow_schema.field("received_at").type),
        "source": pa.array([SOURCE] * count, pa.string()),
        "channel": pa.array([r.channel for r in refs], pa.string()),
        "properties": pa.array(props, pa.string()),
        "lsn": pa.array([0] * count, pa.int64()),
        "profile_id": pa.array([r.profile_id for r in refs], pa.string()),
    }
    arrays = [columns[f.name] if f.name in columns else pa.nulls(count, f.type) for f in EVENTS.arrow_schema]
    return pa.Table.from_arrays(arrays, schema=EVENTS.arrow_schema)


def record(backend: Backend, events: pa.Table) -> int:
    """Store message events idempotently (a retried write of the same message's event is skipped)."""
    if events.num_rows == 0:
        return 0
    since = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    return backend.record_events(LoadBatch(events, ORDER_LINES.empty(), dedupe_since=since)).inserted
