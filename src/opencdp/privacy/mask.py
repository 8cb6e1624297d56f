"""Masking personal data in answers to callers whose key has the ``pii:mask`` scope.

Masks keep what is useful without identifying the person: an email's domain, a
phone's country and operator code and its last two digits, a name's initials, an
IP address's network. ``mask_record`` applies them to a JSON-like value (dicts,
lists, scalars), so an endpoint can mask its whole answer in one call.
"""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import phonenumbers

HIDDEN = "***"

PII_FIELDS = frozenset(
    {"email", "phone", "firstName", "lastName", "first_name", "last_name", "name", "address", "birthday", "ip"}
)
"""Keys whose values are personal data. Spelling does not matter: ``firstName``,
``first_name`` and ``FirstName`` are the same key."""

_MIN_MASKED_DIGITS = 4
_WORD_SEPARATORS = re.compile(r"([\s\-]+)")
_IDENTIFIER = re.compile(r"^(email|phone):(.+)$", re.DOTALL)


def mask_email(value: str) -> str:
    """``anna.petrova@example.ru`` -> ``a***@example.ru`` (the domain is kept)."""
    local, at, domain = value.strip().rpartition("@")
    if not at or not local:
        return mask_text(value)
    local = unicodedata.normalize("NFC", local)
    return (local[0] if len(local) > 1 else "") + HIDDEN + "@" + domain


def mask_phone(value: str) -> str:
    """``+79161234567`` -> ``+7916*****67``: country and operator code and the last 2 digits stay.

    Formatting is kept (``+7 (916) ***-**-67``). Unparseable numbers keep only
    their last 2 digits; numbers with fewer than 6 digits are masked whole.
    """
    digits = sum(ch.isdigit() for ch in value)
    if digits < _MIN_MASKED_DIGITS + 2:
        return "".join("*" if ch.isdigit() else ch for ch in value)
    front = min(_leading_code_digits(value), digits - 2 - _MIN_MASKED_DIGITS)
    out: list[str] = []
    seen = 0
    for ch in value:
        if ch.isdigit():
            ch = ch if seen < front or seen >= digits - 2 else "*"
            seen += 1
        out.append(ch)
    return "".join(out)


def _leading_code_digits(value: str) -> int:
    """How many leading digits are the country code and the operator/area code (0 if unknown)."""
    if not value.strip().startswith("+"):
        return 0
    try:
        number = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        return 0
    return len(str(number.country_code)) + phonenumbers.length_of_national_destination_code(number)


def mask_name(value: str) -> str:
    """``Анна-Мария Петрова`` -> ``А***-М*** П***``: each part keeps its initial."""
    parts = _WORD_SEPARATORS.split(unicodedata.normalize("NFC", value.strip()))
    return "".join(part if _WORD_SEPARATORS.fullmatch(part) else _initial(part) for part in parts if part)


def _initial(word: str) -> str:
    return word[0] + HIDDEN if len(word) > 1 else HIDDEN


def mask_ip(value: str) -> str:
    """``203.0.113.42`` -> ``203.0.113.*``; IPv6 keeps its first 48 bits (``2001:db8:85a3:*``)."""
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        return mask_text(value)
    if isinstance(address, ipaddress.IPv4Address):
        return str(address).rsplit(".", 1)[0] + ".*"
    return ":".join(format(int(group, 16), "x") for group in address.exploded.split(":")[:3]) + ":*"


def mask_text(value: str) -> str:
    """Any other personal value (an address, a birthday): hidden whole, but empty stays empty."""
    return HIDDEN if value else value


def mask_identifier(value: str) -> str:
    """An identity-graph identifier: ``email:anna@example.ru`` -> ``email:a***@example.ru``.

    Identifiers of other kinds (``user_id:...``, ``loyalty_card:...``) are returned as they are.
    """
    match = _IDENTIFIER.match(value)
    if match is None:
        return value
    kind, rest = match.groups()
    return f"{kind}:{_MASKERS[kind](rest)}"


Masker = Callable[[str], str]

_MASKERS: dict[str, Masker] = {
    "email": mask_email,
    "phone": mask_phone,
    "firstname": mask_name,
    "lastname": mask_name,
    "name": mask_name,
    "ip": mask_ip,
}


def _canonical(key: str) -> str:
    return re.sub(r"[\s_\-]", "", key).lower()


def mask_record(obj: Any, pii_fields: Iterable[str] = PII_FIELDS) -> Any:
    """A copy of the JSON-like ``obj`` with personal data masked; ``obj`` is not changed.

    Under a key named in ``pii_fields`` every scalar is masked (also inside nested
    lists and objects, e.g. an address object); elsewhere strings that are
    ``email:``/``phone:`` identifiers are masked. Dict keys, numbers outside PII
    keys, booleans and nulls are kept.
    """
    fields = {_canonical(name) for name in pii_fields}
    return _walk(obj, fields, None)


def _walk(obj: Any, fields: set[str], masker: Masker | None) -> Any:
    if isinstance(obj, Mapping):
        return {key: _walk(value, fields, masker or _masker_for(key, fields)) for key, value in obj.items()}
    if isinstance(obj, list | tuple):
        return [_walk(item, fields, masker) for item in obj]
    if isinstance(obj, str):
        return masker(obj) if masker is not None else mask_identifier(obj)
    if masker is None or obj is None or isinstance(obj, bool):
        return obj
    return masker(str(obj))  # a phone stored as a number, a birthday as a date


def _masker_for(key: Any, fields: set[str]) -> Masker | None:
    if not isinstance(key, str):
        return None
    name = _canonical(key)
    if name not in fields:
        return None
    return _MASKERS.get(name, mask_text)
