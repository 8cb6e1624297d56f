"""Report parameters: parsed and checked once, with errors that name the parameter.

The API and the CLI both pass raw text (``from=2026-01-01``, ``interval=week``); a
report gets a ``Period`` and typed values back, or a ``ReportError`` (HTTP 422) whose
``field`` is the parameter and whose message says what would be accepted.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opencdp.analytics.sql import INTERVALS
from opencdp.errors import TerminalError


class ReportError(TerminalError):
    """A report parameter that cannot be used as given."""

    code = "invalid_report_parameter"
    status = 422


@dataclass(frozen=True)
class Period:
    """``[start, end)`` in UTC, cut into ``interval`` buckets."""

    start: dt.datetime
    end: dt.datetime
    interval: str = "day"

    def to_dict(self) -> dict[str, str]:
        return {"from": self.start.isoformat(), "to": self.end.isoformat(), "interval": self.interval}


def parse_time(value: Any, field: str, *, end_of_day: bool = False) -> dt.datetime:
    """A date (its UTC midnight; the next midnight for an inclusive ``to`` date) or an ISO time."""
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if isinstance(value, dt.date):
        day = dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
        return day + dt.timedelta(days=1) if end_of_day else day
    text = str(value).strip()
    try:
        if len(text) == 10:
            day = dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)
            return day + dt.timedelta(days=1) if end_of_day else day
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ReportError(
            f"`{field}` must be a date (2026-01-31) or an ISO time (2026-01-31T12:00:00Z), not {text!r}", field=field
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def period(
    raw: Mapping[str, Any], now: dt.datetime, *, default_days: int = 90, interval: str | None = "day"
) -> Period:
    """``from``/``to``/``interval`` of a request; by default the last ``default_days`` days up to ``now``.

    A ``to`` date is inclusive (``to=2026-01-31`` covers all of that day).
    """
    end = parse_time(raw["to"], "to", end_of_day=True) if raw.get("to") not in (None, "") else now
    start = parse_time(raw["from"], "from") if raw.get("from") not in (None, "") else end - dt.timedelta(days=default_days)
    if start > end:
        raise ReportError(f"`from` ({start.isoformat()}) is after `to` ({end.isoformat()}); swap them", field="from")
    chosen = str(raw.get("interval") or interval or "day")
    choice(chosen, INTERVALS, "interval")
    return Period(start, end, chosen)


def choice(value: str, allowed: Sequence[str], field: str) -> str:
    if value not in allowed:
        raise ReportError(f"`{field}` must be one of {', '.join(allowed)}, not {value!r}", field=field)
    return value


def integer(raw: Mapping[str, Any], field: str, default: int, *, low: int = 1, high: int = 10_000) -> int:
    value = raw.get(field)
    if value in (None, ""):
        return default
    try:
        number = int(str(value))
    except ValueError:
        raise ReportError(f"`{field}` must be a whole number, not {value!r}", field=field) from None
    if not low <= number <= high:
        raise ReportError(f"`{field}` must be between {low} and {high}, not {number}", field=field)
    return number


def number(raw: Mapping[str, Any], field: str, default: float | None) -> float | None:
    value = raw.get(field)
    if value in (None, ""):
        return default
    try:
        return float(str(value))
    except ValueError:
        raise ReportError(f"`{field}` must be a number, not {value!r}", field=field) from None


def names(raw: Mapping[str, Any], field: str, *, required: bool = False, minimum: int = 0) -> list[str]:
    """A list parameter: repeated, or one comma-separated value."""
    value = raw.get(field)
    items: list[str] = []
    if isinstance(value, (list, tuple)):
        for v in value:
            items += [p.strip() for p in str(v).split(",") if p.strip()]
    elif value not in (None, ""):
        items = [p.strip() for p in str(value).split(",") if p.strip()]
    if required and len(items) < max(minimum, 1):
        need = f"at least {max(minimum, 1)} values" if minimum > 1 else "a value"
        raise ReportError(f"`{field}` needs {need} (comma-separated or repeated)", field=field)
    return items


def unknown(raw: Mapping[str, Any], known: Sequence[str]) -> None:
    """Refuse parameters a report does not take (a typo would otherwise be silently ignored)."""
    for key in raw:
        if key not in known:
            raise ReportError(f"unknown parameter `{key}`; this report takes {', '.join(known)}", field=key)
