"""The suppression list: addresses never to message on a channel, whatever consent says.

An entry is a channel and an address, normalised so that every spelling of it
matches: e-mails lower-case, phone numbers (``sms``, ``whatsapp``, ``viber``) in
E.164, other channels' addresses (push tokens, web push endpoints, Telegram chat
ids) as given, trimmed. Reasons: ``hard_bounce``, ``complaint`` (spam report),
``manual`` and ``unsubscribed_all`` (the person asked for no messages of any kind
on the channel). Removing an entry keeps its row, marked ``deleted``, so the
removal wins over the addition on every engine.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import pyarrow as pa
from sqlglot import exp

from opencdp.consent.model import ConsentError, channel_of
from opencdp.identity.identifiers import normalise_email, normalise_phone
from opencdp.storage.base import Backend
from opencdp.storage.schema import SUPPRESSIONS

_PHONE_CHANNELS = ("sms", "whatsapp", "viber")
_PHONE_OR_ID_CHANNELS = ("viber",)
"""Viber Business Messages address phone numbers, the Viber Bot API its own user ids: either is an address."""
_MAX_ADDRESS = 2048  # web push endpoints are URLs
_MS = dt.timedelta(milliseconds=1)


class Reason(StrEnum):
    HARD_BOUNCE = "hard_bounce"
    COMPLAINT = "complaint"
    MANUAL = "manual"
    UNSUBSCRIBED_ALL = "unsubscribed_all"


@dataclass(frozen=True)
class Suppression:
    channel: str
    address: str
    reason: str
    source: str | None
    created_at: dt.datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "address": self.address,
            "reason": self.reason,
            "source": self.source,
            "created_at": self.created_at,
        }


def reason_of(value: Any, field: str = "reason") -> Reason:
    text = value.strip().lower() if isinstance(value, str) else None
    if text not in {r.value for r in Reason}:
        raise ConsentError(f"`{field}` is {value!r}; use one of {', '.join(r.value for r in Reason)}", field=field)
    return Reason(text)


def address_of(channel: str, raw: Any, *, region: str = "RU", field: str = "address") -> str:
    """The normalised address on ``channel``; raises ``ConsentError`` naming ``field`` for a bad one."""
    text = raw.strip() if isinstance(raw, str) else ""
    if not text:
        raise ConsentError(f"`{field}` is required: the {_what(channel)} to suppress", field=field)
    if len(text) > _MAX_ADDRESS:
        raise ConsentError(f"`{field}` is longer than {_MAX_ADDRESS} characters", field=field)
    value: str | None = text
    if channel == "email":
        value = normalise_email(text)
    elif channel in _PHONE_OR_ID_CHANNELS and not _looks_like_phone(text):
        value = text  # a bot user id, kept as it is
    elif channel in _PHONE_CHANNELS:
        value = normalise_phone(text, region)
    if value is None:
        raise ConsentError(
            f"`{field}` {text[:80]!r} is not a valid {_what(channel)}; "
            + ("write it as name@example.com" if channel == "email" else "write it in international form, e.g. +79161234567"),
            field=field,
        )
    return value


def _looks_like_phone(text: str) -> bool:
    return all(c.isdigit() or c in "+-() " for c in text)


def _what(channel: str) -> str:
    if channel == "email":
        return "e-mail address"
    if channel in _PHONE_CHANNELS:
        return "phone number"
    return f"{channel} address (token or id)"


def _key(channel: str, address: str) -> exp.Expr:
    return exp.and_(
        exp.column("channel").eq(exp.Literal.string(channel)), exp.column("address").eq(exp.Literal.string(address))
    )


def _read(backend: Backend, where: exp.Expr, limit: int | None = None) -> list[dict[str, Any]]:
    query = exp.select("*").from_(backend.table_ref(SUPPRESSIONS)).where(where, copy=False).order_by("channel", "address", copy=False)
    if limit is not None:
        query = query.limit(limit)
    return backend.select(query).to_pylist()


def _suppression(row: dict[str, Any]) -> Suppression:
    return Suppression(row["channel"], row["address"], row["reason"], row["source"], row["created_at"])


def _write(backend: Backend, row: dict[str, Any]) -> None:
    backend.upsert(SUPPRESSIONS, pa.Table.from_pylist([row], schema=SUPPRESSIONS.arrow_schema))


def _version(existing: dict[str, Any] | None, now: dt.datetime) -> dt.datetime:
    """A version newer than the stored one even if the clock stepped back or did not move."""
    if existing is None:
        return now
    stored: dt.datetime = existing["updated_at"]
    if stored.tzinfo is None:
        stored = stored.replace(tzinfo=dt.UTC)
    return max(now, stored + _MS)


def add(
    backend: Backend,
    channel: str,
    address: str,
    reason: str = Reason.MANUAL,
    *,
    source: str | None = None,
    region: str = "RU",
    now: dt.datetime | None = None,
) -> Suppression:
    """Put an address on the list (again); an entry already there takes the new reason and source."""
    channel = channel_of(channel)
    address = address_of(channel, address, region=region)
    why = reason_of(reason)
    now = now or dt.datetime.now(dt.UTC)
    rows = _read(backend, _key(channel, address))
    existing = rows[0] if rows else None
    active = existing is not None and not existing["deleted"]
    created = existing["created_at"] if active and existing else now
    row = {
        "channel": channel,
        "address": address,
        "reason": why.value,
        "source": source,
        "created_at": created,
        "updated_at": _version(existing, now),
        "deleted": False,
    }
    _write(backend, row)
    return _suppression(row)


def remove(backend: Backend, channel: str, address: str, *, region: str = "RU", now: dt.datetime | None = None) -> Suppression | None:
    """Take an address off the list; returns the entry removed, None if it was not on the list."""
    channel = channel_of(channel)
    address = address_of(channel, address, region=region)
    rows = _read(backend, _key(channel, address))
    if not rows or rows[0]["deleted"]:
        return None
    row = {**rows[0], "deleted": True, "updated_at": _version(rows[0], now or dt.datetime.now(dt.UTC))}
    _write(backend, row)
    return _suppression(rows[0])


def suppressed(backend: Backend, channel: str, addresses: Iterable[str], *, region: str = "RU") -> set[str]:
    """Which of ``addresses`` (as given) are on the list for ``channel``; invalid addresses are not."""
    channel = channel_of(channel)
    normalised: dict[str, list[str]] = {}
    for raw in addresses:
        try:
            normalised.setdefault(address_of(channel, raw, region=region), []).append(raw)
        except ConsentError:
            continue
    if not normalised:
        return set()
    found: set[str] = set()
    names = sorted(normalised)
    for start in range(0, len(names), 2000):
        chunk = names[start : start + 2000]
        where = exp.and_(
            exp.column("channel").eq(exp.Literal.string(channel)),
            exp.column("address").isin(*(exp.Literal.string(a) for a in chunk), copy=False),
            exp.column("deleted").not_(),
            copy=False,
        )
        for row in _read(backend, where):
            found.update(normalised[row["address"]])
    return found


def is_suppressed(backend: Backend, channel: str, address: str, *, region: str = "RU") -> bool:
    return address in suppressed(backend, channel, [address], region=region)


def list_suppressions(
    backend: Backend,
    *,
    channel: str | None = None,
    address: str | None = None,
    after: tuple[str, str] | None = None,
    limit: int = 100,
    region: str = "RU",
) -> list[Suppression]:
    """Entries on the list, by channel and address; ``after`` is the (channel, address) to continue from."""
    conditions: list[exp.Expr] = [exp.column("deleted").not_()]
    if channel is not None:
        channel = channel_of(channel)
        conditions.append(exp.column("channel").eq(exp.Literal.string(channel)))
        if address is not None:
            conditions.append(exp.column("address").eq(exp.Literal.string(address_of(channel, address, region=region))))
    elif address is not None:
        raise ConsentError("`address` needs `channel` too (addresses are normalised per channel)", field="channel")
    if after is not None:
        after_channel, after_address = exp.Literal.string(after[0]), exp.Literal.string(after[1])
        later = exp.or_(
            exp.GT(this=exp.column("channel"), expression=after_channel),
            exp.and_(exp.column("channel").eq(after_channel), exp.GT(this=exp.column("address"), expression=after_address)),
        )
        conditions.append(exp.paren(later))
    return [_suppression(row) for row in _read(backend, exp.and_(*conditions), limit)]

