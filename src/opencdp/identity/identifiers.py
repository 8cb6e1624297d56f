"""What identifies a person in an event, normalised, with the values never used for matching.

An identifier is the text ``kind:value`` (``email:anna@example.ru``,
``phone:+79161234567``, ``user_id:42``). ``extract`` reads them from one event:
``userId``, ``anonymousId``, alias ``previousId``, traits (``email``, ``phone``,
loyalty card), Segment's ``context.externalIds[]``, the push token in
``context.device.token`` and the click token campaign links carry (``ocdp_click``
in the page URL or in properties). Invalid values (a malformed email or phone)
and blocked placeholders (``-1``, ``undefined``, ``0000``...) are returned apart,
with the reason: they stay in the event's traits but never link profiles.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import msgspec
import phonenumbers

USER_ID = "user_id"
ANONYMOUS_ID = "anonymous_id"
EMAIL = "email"
PHONE = "phone"
LOYALTY_CARD = "loyalty_card"
DEVICE_TOKEN = "device_token"
CLICK = "click"
EXTERNAL = "external"  # external:<type>, from context.externalIds of unknown types

CLICK_PARAMETER = "ocdp_click"
DEFAULT_PRIORITY = (USER_ID, EMAIL, PHONE, LOYALTY_CARD, CLICK, DEVICE_TOKEN, EXTERNAL, ANONYMOUS_ID)
DEFAULT_BLOCKED = (
    r"[0-]*",
    r"-1",
    r"null|none|nil|undefined|nan|n/?a|unknown|anonymous|guest|test|\[object object\]",
    r"(test|example|noreply|no-reply|null)@(test|example|mail)\.(com|ru|org)",
    r"\+?7?0{7,}|\+?7?(1234567|9999999)\d*",
)
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]{2,}")
_TRAIT_KEYS = {
    "email": EMAIL,
    "phone": PHONE,
    "loyalty_card": LOYALTY_CARD,
    "loyaltyCard": LOYALTY_CARD,
    "card_number": LOYALTY_CARD,
}
_EXTERNAL_TYPES = {
    "email": EMAIL,
    "phone": PHONE,
    "loyalty_card": LOYALTY_CARD,
    "loyaltyCard": LOYALTY_CARD,
    "user_id": USER_ID,
    "userId": USER_ID,
    "anonymous_id": ANONYMOUS_ID,
    "device_token": DEVICE_TOKEN,
    "push_token": DEVICE_TOKEN,
}
_decode = msgspec.json.Decoder().decode
_NOT_SCALAR = (bool, dict, list)  # a tuple: `bool | dict | list` builds a union on every call


@dataclass(frozen=True)
class Rules:
    """Identity resolution rules (``[identity]`` in the configuration)."""

    priority: tuple[str, ...] = DEFAULT_PRIORITY
    """Kinds from most to least trusted: on a conflict the least trusted identifier is dropped."""
    limits: Mapping[str, int] = field(default_factory=lambda: {USER_ID: 1})
    """Most identifiers of a kind one profile may hold; kinds not listed get ``default_limit``."""
    default_limit: int = 5
    blocked: tuple[str, ...] = DEFAULT_BLOCKED
    """Regular expressions (full match, case-insensitive) of placeholder values never used for matching."""
    default_region: str = "RU"

    def __post_init__(self) -> None:
        object.__setattr__(self, "_blocked", re.compile("|".join(f"(?:{b})" for b in self.blocked), re.IGNORECASE))
        ranks: dict[str, int] = {}
        for index, kind in enumerate(self.priority):
            ranks.setdefault(kind, index)
        object.__setattr__(self, "_ranks", ranks)

    def rank(self, identifier: str) -> int:
        """The place of the identifier's kind in ``priority`` (every ``external:<type>`` is ``external``)."""
        kind = identifier.partition(":")[0]  # a sort key of every event's identifiers: kept to one lookup
        return self._ranks.get(kind, len(self.priority))  # type: ignore[attr-defined]

    def limit(self, identifier: str) -> int:
        return self.limits.get(kind_of(identifier), self.default_limit)

    def is_blocked(self, value: str) -> bool:
        return bool(self._blocked.fullmatch(value.strip()))  # type: ignore[attr-defined]


def kind_of(identifier: str) -> str:
    kind, _, rest = identifier.partition(":")
    if kind == EXTERNAL:
        return f"{EXTERNAL}:{rest.partition(':')[0]}"
    return kind


def value_of(identifier: str) -> str:
    kind = kind_of(identifier)
    return identifier[len(kind) + 1 :]


@dataclass(frozen=True)
class Unusable:
    """A value that looked like an identifier but is never used for matching."""

    kind: str
    value: str
    reason: str  # "invalid" or "blocked"


@dataclass
class Extracted:
    identifiers: list[str] = field(default_factory=list)
    unusable: list[Unusable] = field(default_factory=list)


def normalise_email(value: str) -> str | None:
    text = value.strip().lower()
    return text if _EMAIL.fullmatch(text) else None


@functools.lru_cache(maxsize=200_000)
def normalise_phone(value: str, region: str = "RU") -> str | None:
    """E.164, or None when the number is not a valid phone number."""
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalise(kind: str, raw: Any, rules: Rules) -> str | Unusable | None:
    """``kind:value`` for a usable value, an ``Unusable`` for a bad one, None for no value."""
    if raw is None or isinstance(raw, _NOT_SCALAR):
        return None
    text = str(raw).strip() if not isinstance(raw, float) or not raw.is_integer() else str(int(raw))
    if not text:
        return None
    if rules.is_blocked(text):
        return Unusable(kind, text, "blocked")
    if kind == EMAIL:
        value = normalise_email(text)
    elif kind == PHONE:
        value = normalise_phone(text, rules.default_region)
    elif kind == LOYALTY_CARD:
        value = re.sub(r"[\s-]", "", text).upper()
    else:
        value = text
    if value is None:
        return Unusable(kind, text, "invalid")
    if kind == EMAIL and rules.is_blocked(value):
        return Unusable(kind, text, "blocked")
    return f"{kind}:{value}"


def extract(row: Mapping[str, Any], rules: Rules) -> Extracted:
    """Identifiers of one events row (as stored: JSON columns are text), in priority order."""
    found = Extracted()
    seen: set[str] = set()

    def add(kind: str, raw: Any) -> None:
        result = normalise(kind, raw, rules)
        if result is None:
            return
        if isinstance(result, Unusable):
            found.unusable.append(result)
        elif result not in seen:
            seen.add(result)
            found.identifiers.append(result)

    add(USER_ID, row.get("user_id"))
    if row.get("type") == "alias" and row.get("previous_id") is not None:
        add(ANONYMOUS_ID, row.get("previous_id"))
    add(ANONYMOUS_ID, row.get("anonymous_id"))
    traits = _object(row.get("traits"))
    for key, kind in _TRAIT_KEYS.items():
        if key in traits:
            add(kind, traits[key])
    context_text = row.get("context")
    if context_text and ("externalIds" in context_text or "token" in context_text or CLICK_PARAMETER in context_text):
        context = _object(context_text)
        for item in _list(context.get("externalIds")):
            if isinstance(item, dict) and item.get("type") is not None:
                kind = str(item["type"])
                add(_EXTERNAL_TYPES.get(kind, f"{EXTERNAL}:{kind}"), item.get("id"))
        device = context.get("device")
        if isinstance(device, dict):
            add(DEVICE_TOKEN, device.get("token"))
        page = context.get("page")
        if isinstance(page, dict):
            add(CLICK, _click_token(page.get("url")) or _click_token(page.get("search")))
    properties_text = row.get("properties")
    if properties_text and CLICK_PARAMETER in properties_text:
        add(CLICK, _object(properties_text).get(CLICK_PARAMETER))
    found.identifiers.sort(key=rules.rank)
    return found


def _object(text: Any) -> dict[str, Any]:
    if not text:
        return {}
    if isinstance(text, dict):
        return text
    try:
        value = _decode(text)
    except msgspec.DecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> Sequence[Any]:
    return value if isinstance(value, list) else ()


def _click_token(url: Any) -> str | None:
    if not isinstance(url, str) or CLICK_PARAMETER not in url:
        return None
    query = urlsplit(url).query if "?" in url or "://" in url else url.lstrip("?")
    values = parse_qs(query).get(CLICK_PARAMETER)
    return values[0] if values else None


def identifiers_of(rows: Iterable[Mapping[str, Any]], rules: Rules) -> list[Extracted]:
    return [extract(row, rules) for row in rows]
