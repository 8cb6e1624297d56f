"""Column-at-a-time parsing and cleaning of imported values.

Every parser takes a string column and returns the parsed values together with a
``bad`` mask: rows where a value was given but could not be read. Empty cells are
null, never bad; whether a value is required is the caller's business. The work is
vectorised (pyarrow.compute, DuckDB for date-times); the only per-value Python is
phone parsing, done once per distinct number.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import duckdb
import numpy as np
import numpy.typing as npt
import phonenumbers
import pyarrow as pa
import pyarrow.compute as pc

from opencdp.ingest.imports.mapping import MappingError, Options

Mask = npt.NDArray[np.bool_]

_NULL_TEXT = pa.scalar(None, pa.string())
# Thousands separators (spaces, no-break spaces, apostrophes) and currency signs.
_NUMBER_NOISE = r"[\s\x{00a0}\x{202f}'₽$€]"
_NUMBER = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$"
# A simple RFC 5322-ish address: no spaces, one @, a dotted domain; Unicode allowed
# (Cyrillic .рф domains are common here).
_EMAIL_LOCAL = r"[^\s@\"(),:;<>\[\]\\]+"
_EMAIL_LABEL = r"[^\s@\"(),:;<>\[\]\\.]+"
_EMAIL = rf"^{_EMAIL_LOCAL}@{_EMAIL_LABEL}(\.{_EMAIL_LABEL})+$"
_TRUE = ["true", "1", "yes", "y", "t", "on", "да", "д", "истина"]
_FALSE = ["false", "0", "no", "n", "f", "off", "нет", "н", "ложь"]
_GENDERS = {
    "m": "male",
    "male": "male",
    "man": "male",
    "м": "male",
    "муж": "male",
    "мужской": "male",
    "f": "female",
    "female": "female",
    "woman": "female",
    "ж": "female",
    "жен": "female",
    "женский": "female",
}
# Day-first forms (Russian and European exports); ISO 8601 is tried before these.
_DAY_FIRST = ["%d.%m.%Y %H:%M:%S", "%d.%m.%Y %H:%M", "%d.%m.%Y", "%d/%m/%Y %H:%M:%S", "%d/%m/%Y %H:%M", "%d/%m/%Y"]
_DATE_FORMATS = ["%d.%m.%Y", "%d/%m/%Y", "%Y.%m.%d"]
_YEAR_1900_MS = -2_208_988_800_000
_PHONE_CACHE_LIMIT = 500_000
_PHONE_PUNCTUATION = r"[\s().\-\x{00a0}\x{2010}-\x{2015}]"

NOT_A_DATE_TIME = "is not a date-time; write ISO 8601 such as 2024-05-01T12:30:00Z, or set options.timestamp_format"


def not_a_number(value: object) -> str:
    return f"{value!r} is not a number; write digits with a dot or comma as the decimal mark, e.g. 1990.50"


@dataclass
class Parsed:
    values: pa.Array
    bad: Mask
    """A value was given but is not valid."""


def present(values: pa.Array) -> Mask:
    return np.asarray(pc.is_valid(values).to_numpy(zero_copy_only=False), dtype=bool)


def mask(condition: pa.Array) -> Mask:
    """A boolean Arrow array as a numpy mask, null counting as False."""
    return np.asarray(pc.fill_null(condition, False).to_numpy(zero_copy_only=False), dtype=bool)


def clean(values: pa.Array) -> pa.Array:
    """Trim whitespace; empty cells become null."""
    trimmed = pc.utf8_trim_whitespace(values)
    return pc.if_else(pc.equal(trimmed, ""), _NULL_TEXT, trimmed)


def fill(values: pa.Array, default: str | None) -> pa.Array:
    return values if default is None else pc.fill_null(values, default)


def numbers(values: pa.Array) -> Parsed:
    """Decimal numbers written as people write them: ``1 990,50``, ``1990.5``, ``1,234.5``."""
    try:  # fast path: a column of plain numbers (the usual case) casts directly
        direct = pc.cast(values, pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    else:
        if not pc.any(pc.invert(pc.is_finite(direct))).as_py():
            return Parsed(direct, np.zeros(len(values), dtype=bool))
    compact = pc.replace_substring_regex(values, _NUMBER_NOISE, "")
    # With both separators the comma groups thousands; alone it is the decimal mark.
    both = pc.and_(pc.match_substring(compact, ","), pc.match_substring(compact, "."))
    dotted = pc.if_else(both, pc.replace_substring(compact, ",", ""), pc.replace_substring(compact, ",", "."))
    ok = pc.match_substring_regex(dotted, _NUMBER)
    parsed = pc.cast(pc.if_else(ok, dotted, _NULL_TEXT), pa.float64())
    return Parsed(parsed, present(values) & ~mask(ok))


def integers(values: pa.Array) -> Parsed:
    """Whole numbers (``12`` or ``12.0``); ``12.5`` is bad."""
    parsed = numbers(values)
    floats = parsed.values
    whole = mask(pc.equal(pc.floor(floats), floats))
    bad = parsed.bad | (present(floats) & ~whole)
    ints = pc.cast(pc.if_else(whole, floats, pa.scalar(None, pa.float64())), pa.int64())
    return Parsed(ints, bad)


def booleans(values: pa.Array) -> Parsed:
    lowered = pc.utf8_lower(values)
    yes = pc.is_in(lowered, value_set=pa.array(_TRUE))
    no = pc.is_in(lowered, value_set=pa.array(_FALSE))
    known = pc.or_(yes, no)
    result = pc.if_else(known, yes, pa.scalar(None, pa.bool_()))
    return Parsed(result, present(values) & ~mask(known))


def emails(values: pa.Array) -> Parsed:
    """Lower-cased addresses; malformed ones are bad."""
    lowered = pc.utf8_lower(values)
    dots = pc.or_(pc.match_substring(lowered, ".."), pc.match_substring_regex(lowered, r"^\.|\.@"))
    ok = pc.and_(pc.match_substring_regex(lowered, _EMAIL), pc.invert(dots))
    return Parsed(pc.if_else(ok, lowered, _NULL_TEXT), present(values) & ~mask(ok))


def genders(values: pa.Array) -> pa.Array:
    """``male``/``female`` from common spellings (м/ж, m/f, ...); anything else lower-cased as given."""
    lowered = pc.utf8_lower(values)
    keys = pa.array(list(_GENDERS))
    index = pc.index_in(lowered, value_set=keys)
    mapped = pc.take(pa.array(list(_GENDERS.values())), index)
    return pc.coalesce(mapped, lowered)


def upper(values: pa.Array) -> pa.Array:
    return pc.utf8_upper(values)


def lower(values: pa.Array) -> pa.Array:
    return pc.utf8_lower(values)


def category_paths(values: pa.Array) -> pa.Array:
    """Category levels separated by exactly `` > ``."""
    return pc.replace_substring_regex(values, r"\s*>\s*", " > ")


class PhoneBook:
    """E.164 phone numbers, parsing each distinct written form once per import."""

    def __init__(self, region: str) -> None:
        if region.upper() not in phonenumbers.SUPPORTED_REGIONS:
            raise MappingError(
                f"default_region {region!r} is not a known region; use an ISO 3166 code such as RU", field="default_region"
            )
        self.region = region.upper()
        self._cache: dict[str, str | None] = {}
        example = phonenumbers.example_number_for_type(self.region, phonenumbers.PhoneNumberType.MOBILE)
        self.example = (
            phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.INTERNATIONAL) if example else "+7 912 345-67-89"
        )

    def parse(self, values: pa.Array) -> Parsed:
        # Drop the punctuation phonenumbers ignores anyway: shorter input parses faster,
        # and one number written several ways is parsed once.
        compact = pc.replace_substring_regex(values, _PHONE_PUNCTUATION, "")
        distinct = pc.unique(pc.drop_null(compact))
        if len(self._cache) > _PHONE_CACHE_LIMIT:  # bound memory on files of unique numbers
            self._cache.clear()
        normalised = [self._one(v) for v in distinct.to_pylist()]
        lookup = pa.array(normalised, pa.string())
        result = pc.take(lookup, pc.index_in(compact, value_set=distinct))
        return Parsed(result, present(values) & ~present(result))

    def _one(self, text: str) -> str | None:
        if text in self._cache:
            return self._cache[text]
        try:
            number = phonenumbers.parse(text, self.region)
        except phonenumbers.NumberParseException:
            result = None
        else:
            valid = phonenumbers.is_valid_number(number)
            result = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164) if valid else None
        self._cache[text] = result
        return result

    def problem(self, value: str) -> str:
        return (
            f"{value!r} is not a valid phone number for region {self.region}; "
            f"write it with a country code, e.g. {self.example}"
        )


class Clock:
    """Date-time parsing to epoch milliseconds (UTC), vectorised in an in-memory DuckDB.

    Tries, in order: the mapping's ``timestamp_format``, ISO 8601 (with or without
    zone, date only), epoch seconds/milliseconds, and day-first forms such as
    ``01.05.2024 12:30``. Values without a zone are read in ``options.timezone``.
    """

    def __init__(self, options: Options) -> None:
        zone = options.timezone or "UTC"
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise MappingError(
                f"timezone {zone!r} is not a known time zone; use an IANA name such as Europe/Moscow", field="timezone"
            ) from None
        self._con = duckdb.connect(":memory:")
        self._con.execute(f"SET TimeZone = '{zone}'")
        formats = ([options.timestamp_format] if options.timestamp_format else []) + _DAY_FIRST
        # Naive results of strptime go through text so the session zone applies to them.
        custom = "TRY_CAST(CAST(try_strptime(v, $formats) AS VARCHAR) AS TIMESTAMPTZ)"
        parsed = f"coalesce({custom}, TRY_CAST(v AS TIMESTAMPTZ))" if options.timestamp_format else (
            f"coalesce(TRY_CAST(v AS TIMESTAMPTZ), {custom})"
        )
        self._formats = formats
        self._timestamps = f"""
            SELECT CASE
              WHEN regexp_full_match(v, '[0-9]{{13}}') THEN TRY_CAST(v AS BIGINT)
              WHEN regexp_full_match(v, '[0-9]{{9,10}}') THEN TRY_CAST(v AS BIGINT) * 1000
              ELSE epoch_ms({parsed})
            END AS ms FROM _values"""
        self._dates = """
            SELECT strftime(coalesce(TRY_CAST(v AS DATE), CAST(try_strptime(v, $formats) AS DATE)), '%Y-%m-%d') AS d
            FROM _values"""
        self._date_formats = _DATE_FORMATS

    def timestamps(self, values: pa.Array) -> Parsed:
        """Epoch milliseconds (int64)."""
        result = self._run(self._timestamps, values, self._formats)
        return Parsed(result, present(values) & ~present(result))

    def dates(self, values: pa.Array) -> Parsed:
        """``YYYY-MM-DD`` text."""
        result = self._run(self._dates, values, self._date_formats)
        return Parsed(result, present(values) & ~present(result))

    def _run(self, sql: str, values: pa.Array, formats: list[str]) -> pa.Array:
        # One connection, used by the importing thread only: a cursor would not
        # inherit the session's TimeZone.
        self._con.register("_values", pa.table({"v": values}))
        try:
            table = self._con.sql(sql, params={"formats": formats}).to_arrow_table()
        finally:
            self._con.unregister("_values")
        return table.column(0).combine_chunks()

    def close(self) -> None:
        self._con.close()


def iso_seconds(epoch_ms: pa.Array) -> pa.Array:
    """ISO 8601 UTC text (``2024-05-01T12:30:00Z``) of epoch milliseconds."""
    seconds = pc.cast(pc.floor(pc.divide(pc.cast(epoch_ms, pa.float64()), 1000.0)), pa.int64())
    stamps = pc.cast(seconds, pa.timestamp("s"))
    return pc.strftime(stamps, format="%Y-%m-%dT%H:%M:%SZ")


def out_of_range(epoch_ms: pa.Array, now_ms: int, max_future_ms: int) -> tuple[Mask, Mask]:
    """Masks of times too far in the future, and before 1900 (a unit or parsing mistake)."""
    future = mask(pc.greater(epoch_ms, now_ms + max_future_ms))
    ancient = mask(pc.less(epoch_ms, _YEAR_1900_MS))
    return future, ancient


def when(epoch_ms: int) -> str:
    """A readable UTC time for error messages."""
    return dt.datetime.fromtimestamp(epoch_ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
