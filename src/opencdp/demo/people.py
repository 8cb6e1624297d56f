"""Customers of one chunk: CRM attributes plus the latent traits that drive behaviour."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from opencdp.demo import reference as ref
from opencdp.demo import text
from opencdp.demo.config import DAY_MS, Window
from opencdp.demo.taxonomy import KIDS, ROOM_PRIORITY

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

CUSTOMER_COLUMNS: tuple[str, ...] = (
    "customer_id", "email", "phone", "first_name", "last_name", "gender", "birthday", "city",
    "timezone", "country", "loyalty_card", "bonus_balance", "bonus_expires_at",
    "email_consent", "sms_consent", "created_at",
)  # fmt: skip

_MALE_LAST = ref.SURNAMES
_FEMALE_LAST = tuple(ref.female_surname(s) for s in ref.SURNAMES)
_CITY_WEIGHTS = np.array([c.weight for c in ref.CITIES]) / sum(c.weight for c in ref.CITIES)
_DOMAIN_WEIGHTS = np.array([w for _, w in ref.EMAIL_DOMAINS]) / sum(w for _, w in ref.EMAIL_DOMAINS)
_WEB_AGENT_WEIGHTS = np.array([0.30, 0.18, 0.20, 0.20, 0.07, 0.05])


def _zipf(n: int) -> FloatArray:
    w = 1.0 / (np.arange(n) + 4.0)
    return w / w.sum()


@dataclass(frozen=True)
class People:
    """One chunk of customers, numbered globally from ``first``."""

    first: int
    customer_id: pa.Array
    female: BoolArray
    first_name: pa.Array
    last_name: pa.Array
    first_name_json: pa.Array
    last_name_json: pa.Array
    city: IntArray
    utc_offset_ms: IntArray
    birthday_day: IntArray  # days since the Unix epoch
    created_t: FloatArray  # days since the start of history, negative = signed up before
    email: pa.Array  # clean lowercase address, null when unknown
    email_raw: pa.Array  # as typed into the CRM (mixed case, stray spaces)
    phone_number: IntArray  # 10-digit national number, 0 when unknown
    phone_raw: pa.Array  # as typed into the CRM, mixed formats
    card: pa.Array  # 13-digit loyalty card, null when none
    has_card: BoolArray
    email_consent: BoolArray
    sms_consent: BoolArray
    # Latent behaviour.
    rate: FloatArray  # purchases per day while alive (Gamma across customers)
    dropout: FloatArray  # probability to churn after each purchase (Beta across customers)
    tier: FloatArray  # price-quantile preference, drives the average check
    online_share: FloatArray
    app_user: BoolArray
    browse_rate: FloatArray  # browsing sessions per day while active
    open_rate: FloatArray  # e-mail open propensity
    room_order: IntArray  # (n, rooms) order in which rooms get furnished
    n_rooms: IntArray
    web_agent: IntArray
    app_kind: IntArray
    ip: pa.Array

    @property
    def size(self) -> int:
        return len(self.city)

    @property
    def has_email(self) -> BoolArray:
        return np.asarray(self.email.is_valid())

    @property
    def has_phone(self) -> BoolArray:
        return self.phone_number > 0

    def created_ms(self, window: Window) -> IntArray:
        return window.start_ms + np.round(self.created_t * DAY_MS).astype(np.int64)


def format_phones(number: IntArray, style: IntArray) -> pa.Array:
    """Russian mobile numbers in mixed real-world formats.

    Styles: 0 ``+79123456789``, 1 ``89123456789``, 2 ``8 (912) 345-67-89``,
    3 ``+7 912 345-67-89``, 4 ``9123456789``.
    """
    s = text.padded(number, 10)
    a, b = pc.utf8_slice_codeunits(s, 0, 3), pc.utf8_slice_codeunits(s, 3, 6)
    c, d = pc.utf8_slice_codeunits(s, 6, 8), pc.utf8_slice_codeunits(s, 8, 10)
    variants = [
        text.cat("+7", s),
        text.cat("8", s),
        text.cat("8 (", a, ") ", b, "-", c, "-", d),
        text.cat("+7 ", a, " ", b, "-", c, "-", d),
        s,
    ]
    out = pc.choose(pa.array(np.asarray(style, dtype=np.int8)), *variants)
    return text.nulls_where(number <= 0, out)


def _loyalty_cards(index: IntArray) -> pa.Array:
    """Unique EAN-13 cards in the in-store range 2xxxxxxxxxxxC (C = check digit)."""
    body = 200_000_000_000 + (index * 7_340_033 + 91_138_721) % 100_000_000_000
    chars = text.digits(body, 12)
    weights = np.tile(np.array([1, 3], dtype=np.int64), 6)
    total = ((chars - ord("0")).astype(np.int64) * weights).sum(axis=1)
    check = ((10 - total % 10) % 10 + ord("0")).astype(np.uint8)
    return text.fixed_width(np.hstack([chars, check[:, None]]))


def _emails(
    rng: np.random.Generator, index: IntArray, female: BoolArray, fn: IntArray, ln: IntArray
) -> pa.Array:
    first_lat = text.where(
        female,
        text.lookup(
            [ref.translit(x) for x in ref.FEMALE_FIRST_NAMES], fn % len(ref.FEMALE_FIRST_NAMES)
        ),
        text.lookup(
            [ref.translit(x) for x in ref.MALE_FIRST_NAMES], fn % len(ref.MALE_FIRST_NAMES)
        ),
    )
    last_lat = text.where(
        female,
        text.lookup([ref.translit(x) for x in _FEMALE_LAST], ln),
        text.lookup([ref.translit(x) for x in _MALE_LAST], ln),
    )
    initial = pc.utf8_slice_codeunits(first_lat, 0, 1)
    number = text.num(index + 1)  # unique suffix: letters then digits never collide
    style = rng.choice(4, size=len(index), p=[0.4, 0.25, 0.2, 0.15])
    local = pc.choose(
        pa.array(style.astype(np.int8)),
        text.cat(first_lat, ".", last_lat, number),
        text.cat(initial, last_lat, number),
        text.cat(last_lat, ".", first_lat, number),
        text.cat(first_lat, "_", number),
    )
    domain = text.lookup(
        [d for d, _ in ref.EMAIL_DOMAINS],
        rng.choice(len(_DOMAIN_WEIGHTS), size=len(index), p=_DOMAIN_WEIGHTS),
    )
    return text.cat(local, "@", domain)


def random_ips(rng: np.random.Generator, n: int) -> pa.Array:
    """IPv4 addresses from blocks common with Russian ISPs."""
    first = text.lookup(
        [str(o) for o in ref.IP_FIRST_OCTETS], rng.integers(0, len(ref.IP_FIRST_OCTETS), n)
    )
    parts: list[text.Part] = [first]
    for _ in range(3):
        parts += [".", text.num(rng.integers(1, 255, n))]
    return text.cat(*parts)


def make_people(rng: np.random.Generator, first: int, n: int, window: Window) -> People:
    index = np.arange(first, first + n, dtype=np.int64)
    female = rng.random(n) < 0.56
    fn = np.where(
        female,
        rng.choice(len(ref.FEMALE_FIRST_NAMES), n, p=_zipf(len(ref.FEMALE_FIRST_NAMES))),
        rng.choice(len(ref.MALE_FIRST_NAMES), n, p=_zipf(len(ref.MALE_FIRST_NAMES))),
    )
    ln = rng.choice(len(ref.SURNAMES), n, p=_zipf(len(ref.SURNAMES)))
    first_name = text.where(
        female, text.lookup(ref.FEMALE_FIRST_NAMES, fn), text.lookup(ref.MALE_FIRST_NAMES, fn)
    )
    last_name = text.where(female, text.lookup(_FEMALE_LAST, ln), text.lookup(_MALE_LAST, ln))
    city = rng.choice(len(ref.CITIES), n, p=_CITY_WEIGHTS)
    offsets = np.array([c.utc_offset_hours for c in ref.CITIES], dtype=np.int64) * 3_600_000
    age_years = np.clip(rng.normal(40, 12, n), 18.05, 79.9)
    end_day = window.end_ms // DAY_MS - 1
    birthday = end_day - np.floor(age_years * 365.25).astype(np.int64)
    before = rng.random(n) < 0.45
    created_t = np.where(before, -rng.uniform(0, 5 * 365, n), rng.uniform(0.5, window.days - 1, n))

    email = _emails(rng, index, female, fn, ln)
    email = text.nulls_where(rng.random(n) < 0.03, email)
    messy = rng.random(n)
    email_raw = text.where(messy < 0.05, pc.utf8_title(email), email)
    email_raw = text.where(messy > 0.97, text.cat(" ", email_raw, " "), email_raw)
    email_raw = text.where((messy > 0.05) & (messy < 0.07), pc.utf8_upper(email), email_raw)
    phone = 9_000_000_000 + (index * 387_420_489 + 537_193_842) % 1_000_000_000
    phone = np.where(rng.random(n) < 0.05, 0, phone)
    has_card = rng.random(n) < 0.6

    rate = np.minimum(rng.gamma(0.75, 2.8 / 0.75, n), 40.0) / 365.0
    keys = rng.exponential(size=(n, len(ROOM_PRIORITY))) / np.array(ROOM_PRIORITY)
    has_kids = rng.random(n) < 0.35
    keys[~has_kids, KIDS] = np.inf
    return People(
        first=first,
        customer_id=text.cat("C", text.padded(index + 1, 7)),
        female=female,
        first_name=first_name,
        last_name=last_name,
        first_name_json=text.cat('"', first_name, '"'),
        last_name_json=text.cat('"', last_name, '"'),
        city=city,
        utc_offset_ms=offsets[city],
        birthday_day=birthday,
        created_t=created_t,
        email=email,
        email_raw=email_raw,
        phone_number=phone,
        phone_raw=format_phones(phone, rng.choice(5, n, p=[0.35, 0.2, 0.2, 0.15, 0.1])),
        card=text.nulls_where(~has_card, _loyalty_cards(index)),
        has_card=has_card,
        email_consent=rng.random(n) < 0.68,
        sms_consent=rng.random(n) < 0.42,
        rate=rate,
        dropout=rng.beta(1.3, 3.2, n),
        tier=rng.beta(2.0, 2.6, n),
        online_share=np.where(has_card, rng.beta(2.0, 5.0, n), rng.beta(3.5, 2.2, n)),
        app_user=rng.random(n) < 0.3,
        browse_rate=(rng.gamma(0.6, 0.9 / 0.6, n) + 0.25 * rate * 365.0) / 365.0,
        open_rate=rng.beta(1.2, 3.4, n),
        room_order=np.argsort(keys, axis=1).astype(np.int64),
        n_rooms=np.where(has_kids, len(ROOM_PRIORITY), len(ROOM_PRIORITY) - 1),
        web_agent=rng.choice(len(_WEB_AGENT_WEIGHTS), n, p=_WEB_AGENT_WEIGHTS),
        app_kind=(rng.random(n) < 0.65).astype(np.int64),
        ip=random_ips(rng, n),
    )


def customers_table(
    people: People,
    created_ms: IntArray,
    bonus_balance: IntArray,
    bonus_expires_day: IntArray,
    email_consent: BoolArray,
) -> pa.Table:
    """customers.csv rows; ``bonus_expires_day`` is days since the epoch, 0 = none."""
    cities = [c.name for c in ref.CITIES]
    table = pa.table(
        {
            "customer_id": people.customer_id,
            "email": people.email_raw,
            "phone": people.phone_raw,
            "first_name": people.first_name,
            "last_name": people.last_name,
            "gender": text.where(people.female, "f", "m"),
            "birthday": text.iso_dates(people.birthday_day),
            "city": text.lookup(cities, people.city),
            "timezone": text.lookup([c.timezone for c in ref.CITIES], people.city),
            "country": pa.repeat(pa.scalar("RU", pa.string()), people.size),
            "loyalty_card": people.card,
            "bonus_balance": pa.array(bonus_balance, pa.int64()),
            "bonus_expires_at": text.nulls_where(
                bonus_expires_day <= 0, text.iso_dates(bonus_expires_day)
            ),
            "email_consent": pa.array(email_consent & people.has_email, pa.bool_()),
            "sms_consent": pa.array(people.sms_consent & people.has_phone, pa.bool_()),
            "created_at": text.iso_seconds(created_ms),
        }
    )
    return table.select(list(CUSTOMER_COLUMNS))
