"""Consent as data: channels, topics, statuses, and the consent changes an events row records.

Consent is kept per **channel** (``CHANNELS``) and per **topic** (a lowercase slug:
``marketing`` unless said otherwise, or any list such as ``news``, ``loyalty``). Its
**status** is ``opted_in``, ``pending`` (a double opt-in message was sent and is not
confirmed yet) or ``opted_out``; with nothing recorded it is ``unknown``. Only
``opted_in`` allows a message, except for the ``transactional`` topic (order and
delivery notices, password resets), which needs no marketing consent and is allowed
unless ``opted_out`` was recorded for it (``permits``). The suppression list
(``opencdp.consent.suppressions``) applies on top of consent, to every topic.

Events are the source of truth: ``parse_event`` reads the consent changes of one
stored events row, and the store (``opencdp.consent.store``) folds a profile's
changes, the latest by event time winning. What a row can say:

* **identify traits** (identify calls only: the traits other calls carry in
  ``context.traits`` are an SDK's cache and may be stale)

  - ``consents``: ``{"email": {"marketing": "opted_in", "news": "pending"}, "sms": "opted_out"}``,
    a channel mapped to a status (for topic ``marketing``) or to ``{topic: status}``;
  - flat flags for topic ``marketing``, per channel: ``<channel>_consent``,
    ``<channel>_opt_in`` and their camelCase forms (``email_consent`` and
    ``sms_consent`` are what the customers import writes; ``emailOptIn``,
    ``sms_opt_in``, ``webPushConsent`` ...);
  - ``unsubscribed: true``: email, topic ``marketing``, ``opted_out``
    (``unsubscribed: false`` is ignored: many sources send it for everyone, and it
    is no proof that anyone agreed).

  When ``consents`` and a flag in one event speak of the same channel and topic,
  ``consents`` wins.
* **track events**, with ``properties.topic`` (default ``marketing``),
  ``properties.source`` (default: the event's source) and ``properties.evidence``
  (an object kept as proof, e.g. the form, the IP, the wording shown):

  - ``Consent Updated``: ``properties.channel`` and ``properties.status``;
  - ``Unsubscribed``: ``opted_out`` on ``properties.channel`` (default email);
  - ``Email Unsubscribed``: ``opted_out`` on email;
  - ``Double Opt-in Confirmed``: ``opted_in`` on ``properties.channel`` (default email).

A status is one of the three names (any case) or a boolean (``true`` is
``opted_in``, ``false`` ``opted_out``). A value that is not understood never
changes consent: the event is stored as it came, and ``parse_event`` reports the
part it ignored (``Ignored``) with the field and the reason.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import msgspec

from opencdp.errors import TerminalError

CHANNELS = ("email", "sms", "push", "web_push", "viber", "telegram", "whatsapp")
DEFAULT_TOPIC = "marketing"
TRANSACTIONAL = "transactional"
UNKNOWN = "unknown"
"""The status of a channel and topic nobody recorded anything about: no consent."""


class Status(StrEnum):
    OPTED_IN = "opted_in"
    PENDING = "pending"
    OPTED_OUT = "opted_out"


CONSENT_UPDATED = "Consent Updated"
UNSUBSCRIBED = "Unsubscribed"
EMAIL_UNSUBSCRIBED = "Email Unsubscribed"
DOUBLE_OPT_IN_CONFIRMED = "Double Opt-in Confirmed"
CONSENT_EVENTS = (CONSENT_UPDATED, UNSUBSCRIBED, EMAIL_UNSUBSCRIBED, DOUBLE_OPT_IN_CONFIRMED)

TRAIT_MARKERS = ("consent", "opt_in", "optin", "unsubscribed")
"""Lower-case fragments one of which every consent trait name contains (to pre-filter rows in SQL)."""

_TOPIC = re.compile(r"[a-z0-9]+(?:[_-][a-z0-9]+)*")
_TOPIC_MAX = 64
_STATUSES = ", ".join(s.value for s in Status)
_decode = msgspec.json.Decoder().decode


def _camel(channel: str) -> str:
    head, *rest = channel.split("_")
    return head + "".join(part.title() for part in rest)


# Flat trait -> channel (topic marketing), e.g. email_consent, email_opt_in, emailConsent, emailOptIn.
FLAGS: dict[str, str] = {
    name: channel
    for channel in CHANNELS
    for name in (f"{channel}_consent", f"{channel}_opt_in", f"{_camel(channel)}Consent", f"{_camel(channel)}OptIn")
}


class ConsentError(TerminalError):
    """A channel, topic or status that is not one of the accepted values."""

    status = 422
    code = "invalid_consent"


_Add = Callable[[str, str, Status, str, str | None, Any], None]
"""Record a change: channel, topic, status, via, source (None: the event's), evidence."""
_Ignore = Callable[[str, ConsentError | str], None]


@dataclass(frozen=True)
class ConsentChange:
    """One recorded change of consent, as an event said it."""

    profile_id: str | None
    channel: str
    topic: str
    status: Status
    at: dt.datetime
    """Event time: when the person gave or withdrew consent."""
    source: str
    """``properties.source`` of a consent event, else the event's source (write key's source, import:<kind>)."""
    message_id: str
    via: str
    """What in the event recorded it: ``traits.consents.email.marketing``, ``event:Consent Updated``."""
    evidence: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "topic": self.topic,
            "status": self.status.value,
            "updated_at": self.at,
            "source": self.source,
            "message_id": self.message_id,
            "via": self.via,
            "evidence": self.evidence,
        }


@dataclass(frozen=True)
class Ignored:
    """A consent part of an event that was not understood, so changed nothing."""

    message_id: str
    field: str
    reason: str


@dataclass
class Parsed:
    changes: list[ConsentChange] = field(default_factory=list)
    ignored: list[Ignored] = field(default_factory=list)


# -- values ----------------------------------------------------------------------
def channel_of(value: Any, field: str = "channel") -> str:
    """A channel name (any case, ``-`` for ``_``); raises ``ConsentError`` naming ``field``."""
    text = value.strip().lower().replace("-", "_") if isinstance(value, str) else None
    if text not in CHANNELS:
        raise ConsentError(f"`{field}` is {_shown(value)}; use one of {', '.join(CHANNELS)}", field=field)
    return text


def topic_of(value: Any, field: str = "topic") -> str:
    """A topic slug (lower-cased): letters, digits, ``_`` and ``-``; None means ``marketing``."""
    if value is None:
        return DEFAULT_TOPIC
    text = value.strip().lower() if isinstance(value, str) else None
    if text is None or len(text) > _TOPIC_MAX or not _TOPIC.fullmatch(text):
        raise ConsentError(
            f"`{field}` is {_shown(value)}; a topic is a lowercase slug of letters, digits, _ and - "
            f"(up to {_TOPIC_MAX} characters) such as {DEFAULT_TOPIC!r} or 'news'",
            field=field,
        )
    return text


def status_of(value: Any, field: str = "status") -> Status:
    """A status name (any case) or a boolean (true: opted_in, false: opted_out)."""
    if isinstance(value, bool):
        return Status.OPTED_IN if value else Status.OPTED_OUT
    text = value.strip().lower() if isinstance(value, str) else None
    if text not in {s.value for s in Status}:
        raise ConsentError(f"`{field}` is {_shown(value)}; use one of {_STATUSES} (or true / false)", field=field)
    return Status(text)


def permits(status: str, topic: str) -> bool:
    """Whether a message on ``topic`` may go to someone with this consent status (suppressions aside)."""
    if topic == TRANSACTIONAL:
        return status != Status.OPTED_OUT
    return status == Status.OPTED_IN


def _shown(value: Any) -> str:
    if value is None:
        return "missing"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# -- events rows -------------------------------------------------------------------
def parse_event(row: Mapping[str, Any]) -> Parsed:
    """The consent changes one events row records (JSON columns as stored text, or dicts).

    Reads ``message_id``, ``type``, ``event``, ``timestamp``, ``source``, ``properties``,
    ``traits`` and ``profile_id``. Changes within one event are unique per channel and topic.
    """
    parsed = Parsed()
    found: dict[tuple[str, str], ConsentChange] = {}
    message_id = str(row.get("message_id") or "")

    def add(channel: str, topic: str, status: Status, via: str, source: str | None, evidence: Any) -> None:
        found[(channel, topic)] = ConsentChange(
            profile_id=row.get("profile_id"),
            channel=channel,
            topic=topic,
            status=status,
            at=row["timestamp"],
            source=source or str(row.get("source") or ""),
            message_id=message_id,
            via=via,
            evidence=evidence if isinstance(evidence, dict) and evidence else None,
        )

    def ignore(field: str, error: ConsentError | str) -> None:
        parsed.ignored.append(Ignored(message_id, field, error.detail if isinstance(error, ConsentError) else error))

    if row.get("type") == "identify":
        _from_traits(_object(row.get("traits")), add, ignore)
    elif row.get("type") == "track" and row.get("event") in CONSENT_EVENTS:
        _from_track(str(row["event"]), _object(row.get("properties")), add, ignore)
    parsed.changes = list(found.values())
    return parsed


def _from_traits(traits: Mapping[str, Any], add: _Add, ignore: _Ignore) -> None:
    for name, value in traits.items():
        if name in FLAGS:
            try:
                add(FLAGS[name], DEFAULT_TOPIC, status_of(value, f"traits.{name}"), f"traits.{name}", None, None)
            except ConsentError as error:
                ignore(f"traits.{name}", error)
    if "unsubscribed" in traits:
        value = traits["unsubscribed"]
        if value is True:
            add("email", DEFAULT_TOPIC, Status.OPTED_OUT, "traits.unsubscribed", None, None)
        elif value is not False:
            ignore("traits.unsubscribed", f"`traits.unsubscribed` is {_shown(value)}; only true (opted out of email) is read")
    consents = traits.get("consents")
    if consents is None:
        return
    if not isinstance(consents, dict):
        ignore("traits.consents", "`traits.consents` must be an object such as {\"email\": {\"marketing\": \"opted_in\"}}")
        return
    for raw_channel, value in consents.items():
        where = f"traits.consents.{raw_channel}"
        try:
            channel = channel_of(raw_channel, where)
        except ConsentError as error:
            ignore(where, error)
            continue
        topics = value if isinstance(value, dict) else {DEFAULT_TOPIC: value}
        for raw_topic, status in topics.items():
            path = f"{where}.{raw_topic}" if isinstance(value, dict) else where
            try:
                add(channel, topic_of(raw_topic, path), status_of(status, path), path, None, None)
            except ConsentError as error:
                ignore(path, error)


def _from_track(event: str, properties: Mapping[str, Any], add: _Add, ignore: _Ignore) -> None:
    try:
        if event == EMAIL_UNSUBSCRIBED:
            channel = "email"
        elif event == CONSENT_UPDATED:
            channel = channel_of(properties.get("channel"), "properties.channel")
        else:
            channel = channel_of(properties.get("channel", "email"), "properties.channel")
        topic = topic_of(properties.get("topic"), "properties.topic")
        if event == CONSENT_UPDATED:
            status = status_of(properties.get("status"), "properties.status")
        else:
            status = Status.OPTED_IN if event == DOUBLE_OPT_IN_CONFIRMED else Status.OPTED_OUT
    except ConsentError as error:
        ignore(error.field or "properties", error)
        return
    source = properties.get("source")
    if source is not None and not isinstance(source, str):
        ignore("properties.source", f"`properties.source` is {_shown(source)}, not text; the event's source is used")
        source = None
    evidence = properties.get("evidence")
    if evidence is not None and not isinstance(evidence, dict):
        ignore("properties.evidence", f"`properties.evidence` is {_shown(evidence)}, not an object; it is not kept")
    add(channel, topic, status, f"event:{event}", source or None, evidence)


def _object(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    if not value:
        return {}
    try:
        decoded = _decode(value)
    except msgspec.DecodeError:
        return {}
    return decoded if isinstance(decoded, dict) else {}
