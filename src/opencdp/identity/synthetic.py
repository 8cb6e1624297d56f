"""Synthetic Russian retail customers with known duplicates, for dedupe tests and benchmarks.

``generate_customers(records, duplicate_share=..., seed=...)`` makes people (Cyrillic
names, birthdays, cities, e-mails, ``+7`` mobiles), a few households that share a
surname, a city and sometimes a phone or an e-mail (the hard non-matches), and then
duplicate records of some people, each corrupted the way CRM imports are: typos,
names typed in Latin, day and month swapped, another e-mail domain, missing fields.
The result is the dedupe input table plus the true person of every record, and
``pair_quality`` scores ``find_matches`` output against that truth.

The same ``records`` and ``seed`` give the same table, on any machine.
"""

from __future__ import annotations

import datetime
import itertools
import random
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import pyarrow as pa

from opencdp.demo import reference as ref

RECORD_SCHEMA = pa.schema(
    [
        ("profile_id", pa.string()),
        ("first_name", pa.string()),
        ("last_name", pa.string()),
        ("email", pa.string()),
        ("phone", pa.string()),
        ("birthday", pa.date32()),
        ("city", pa.string()),
    ]
)

CITIES: tuple[tuple[str, float], ...] = (
    ("Москва", 13.1), ("Санкт-Петербург", 5.6), ("Новосибирск", 1.63),
    ("Екатеринбург", 1.54), ("Казань", 1.31), ("Красноярск", 1.21),
    ("Нижний Новгород", 1.21), ("Челябинск", 1.18), ("Уфа", 1.16), ("Самара", 1.16),
    ("Ростов-на-Дону", 1.14), ("Краснодар", 1.10), ("Омск", 1.10), ("Воронеж", 1.05),
    ("Пермь", 1.03), ("Волгоград", 1.0), ("Тюмень", 0.85), ("Саратов", 0.83),
    ("Тольятти", 0.68), ("Ижевск", 0.63), ("Барнаул", 0.63), ("Хабаровск", 0.62),
    ("Иркутск", 0.61), ("Владивосток", 0.60), ("Ярославль", 0.57), ("Томск", 0.57),
    ("Оренбург", 0.55), ("Кемерово", 0.55), ("Рязань", 0.52), ("Калининград", 0.49),
    ("Тверь", 0.42), ("Сочи", 0.45), ("Тула", 0.46), ("Курск", 0.44), ("Мурманск", 0.27),
)  # fmt: skip

# Stems and endings for the long tail of surnames the reference list lacks.
_STEMS: tuple[str, ...] = (
    "Бел", "Чер", "Гор", "Мал", "Сух", "Крут", "Лис", "Бобр", "Ворон", "Галк", "Дуб",
    "Жар", "Зим", "Клён", "Лап", "Мох", "Нос", "Пес", "Рыж", "Сел", "Ткач", "Уш", "Хлеб",
    "Шуб", "Щук", "Юдин", "Ясен", "Бур", "Вяз", "Глад", "Дорож", "Ермол", "Жмур", "Золот",
    "Калач", "Лыс", "Мороз", "Нечай", "Овс", "Пряж", "Русак", "Свир", "Тарх", "Ухан",
    "Фомич", "Харит", "Цвет", "Чуд", "Шипил", "Янк", "Богат", "Вербиц", "Гладыш", "Дрозд",
    "Ерш", "Жданк", "Зуб", "Ильич", "Карась", "Лужк", "Мухан", "Нагорн", "Окун", "Перепёлк",
    "Рогоз", "Сокольн", "Трещ", "Уклейк", "Филин", "Хомяк", "Чайк", "Шмел", "Щегл", "Ястреб",
)  # fmt: skip
_ENDINGS: tuple[str, ...] = ("ов", "ин", "ский", "енко", "ук")

_CYRILLIC = "абвгдежзийклмнопрстуфхцчшщыэюя"
# Letters people confuse when typing Russian names by ear or on a phone keyboard.
_CONFUSED: dict[str, str] = {
    "а": "о", "о": "а", "е": "и", "и": "е", "ё": "е", "с": "з", "з": "с", "т": "д",
    "д": "т", "б": "п", "п": "б", "в": "ф", "ф": "в", "ш": "щ", "щ": "ш", "й": "и",
    "ы": "и", "я": "а", "ю": "у", "ь": "", "н": "м", "м": "н", "л": "д", "р": "п",
}  # fmt: skip

# Latin spellings of the same Cyrillic name: passport (ICAO 9303), the common
# "BGN-like" one, and an old-fashioned one with j and c.
_SCHEMES: tuple[dict[str, str], ...] = (
    {"ж": "zh", "й": "i", "х": "kh", "ц": "ts", "ч": "ch", "ш": "sh", "щ": "shch",
     "ъ": "ie", "ы": "y", "ь": "", "э": "e", "ю": "iu", "я": "ia", "ё": "e"},
    {"ж": "zh", "й": "y", "х": "kh", "ц": "ts", "ч": "ch", "ш": "sh", "щ": "shch",
     "ъ": "", "ы": "y", "ь": "'", "э": "e", "ю": "yu", "я": "ya", "ё": "yo"},
    {"ж": "zh", "й": "j", "х": "h", "ц": "c", "ч": "ch", "ш": "sh", "щ": "sch",
     "ъ": "", "ы": "y", "ь": "", "э": "e", "ю": "ju", "я": "ja", "ё": "e"},
)  # fmt: skip
_PLAIN = dict(zip("абвгдезиклмнопрстуф", "abvgdeziklmnoprstuf", strict=True))

_BIRTH_FIRST = datetime.date(1955, 1, 1)
_BIRTH_DAYS = (datetime.date(2006, 12, 31) - _BIRTH_FIRST).days


@dataclass(frozen=True)
class SyntheticCustomers:
    """The dedupe input table and, row for row, the person each record belongs to."""

    records: pa.Table
    cluster_ids: tuple[int, ...]
    corruptions: tuple[tuple[str, ...], ...] = field(repr=False)
    """Per record, the corruptions applied to it (empty for a person's first record)."""

    def true_pairs(self) -> set[tuple[str, str]]:
        """Every (smaller, larger) pair of profile ids that belong to one person."""
        members: dict[int, list[str]] = defaultdict(list)
        for profile_id, cluster in zip(
            self.records.column("profile_id").to_pylist(), self.cluster_ids, strict=True
        ):
            members[cluster].append(profile_id)
        return {
            (a, b) if a < b else (b, a)
            for ids in members.values()
            for a, b in itertools.combinations(ids, 2)
        }


@dataclass(frozen=True)
class PairQuality:
    """Pairwise precision and recall of dedupe output against the ground truth.

    Precision is 1.0 when nothing was predicted (nothing wrong was said).
    """

    true_pairs: int
    merge_pairs: int
    merge_precision: float
    merge_recall: float
    review_pairs: int
    """Pairs at or above ``review_at``, merges included."""
    review_precision: float
    review_recall: float


def pair_quality(matches: pa.Table, customers: SyntheticCustomers) -> PairQuality:
    """Score ``find_matches`` output (``profile_id_l``, ``profile_id_r``, ``decision``)."""
    truth = customers.true_pairs()
    pairs = list(
        zip(
            matches.column("profile_id_l").to_pylist(),
            matches.column("profile_id_r").to_pylist(),
            strict=True,
        )
    )
    merged = {
        pair
        for pair, decision in zip(pairs, matches.column("decision").to_pylist(), strict=True)
        if decision == "merge"
    }
    found = set(pairs)

    def ratio(hit: int, total: int) -> float:
        return hit / total if total else 1.0

    return PairQuality(
        true_pairs=len(truth),
        merge_pairs=len(merged),
        merge_precision=ratio(len(merged & truth), len(merged)),
        merge_recall=ratio(len(merged & truth), len(truth)),
        review_pairs=len(found),
        review_precision=ratio(len(found & truth), len(found)),
        review_recall=ratio(len(found & truth), len(truth)),
    )


def generate_customers(
    records: int, *, duplicate_share: float = 0.2, seed: int = 0
) -> SyntheticCustomers:
    """``records`` customer records of which ``duplicate_share`` are extra records of
    people already present (a person may get several), in shuffled order."""
    if records < 0 or not 0 <= duplicate_share < 1:
        raise ValueError(
            f"records must be >= 0 and duplicate_share in [0, 1), got {records}, {duplicate_share}"
        )
    rng = random.Random(seed)
    duplicates = round(records * duplicate_share)
    people = [_person(rng) for _ in range(records - duplicates)]
    _make_contacts_unique(rng, people)
    _make_households(rng, people)
    rows: list[tuple[dict[str, object], int, tuple[str, ...]]] = [
        (person, n, ()) for n, person in enumerate(people)
    ]
    taken = {(name, person[name]) for person in people for name in ("email", "phone")}
    for _ in range(duplicates if people else 0):
        n = rng.randrange(len(people))
        copy, applied = _corrupt(rng, people[n])
        # A new e-mail or phone is the person's own: it cannot be someone else's.
        while copy["email"] not in (None, people[n]["email"]) and ("email", copy["email"]) in taken:
            local, domain = str(copy["email"]).split("@")
            copy["email"] = f"{local}{rng.randrange(10)}@{domain}"
        while copy["phone"] not in (None, people[n]["phone"]) and ("phone", copy["phone"]) in taken:
            copy["phone"] = _phone(rng)
        taken.update((name, copy[name]) for name in ("email", "phone"))
        rows.append((copy, n, applied))
    rng.shuffle(rows)
    columns: dict[str, list[object]] = {name: [] for name in RECORD_SCHEMA.names}
    for index, (row, _, _) in enumerate(rows):
        columns["profile_id"].append(f"p{index:07d}")
        for name in RECORD_SCHEMA.names[1:]:
            columns[name].append(row[name])
    table = pa.table(columns, schema=RECORD_SCHEMA)
    return SyntheticCustomers(
        records=table,
        cluster_ids=tuple(cluster for _, cluster, _ in rows),
        corruptions=tuple(applied for _, _, applied in rows),
    )


def transliterate(text: str, scheme: int) -> str:
    """``text`` in Latin letters by one of the spelling schemes (0 passport, 1 common, 2 old)."""
    table = _SCHEMES[scheme]
    out = []
    for ch in text:
        low = ch.lower()
        latin = table.get(low, _PLAIN.get(low, ch))
        out.append(latin.capitalize() if ch.isupper() else latin)
    return "".join(out)


def _zipf(items: tuple[str, ...], offset: float) -> tuple[tuple[str, ...], list[float]]:
    """Cumulative Zipf-like weights: the first items are the most common, with a long tail."""
    return items, list(itertools.accumulate(1.0 / (n + offset) for n in range(len(items))))


_SURNAMES: tuple[str, ...] = ref.SURNAMES + tuple(
    stem + ending for stem in _STEMS for ending in _ENDINGS
)
_FEMALE_FIRST = _zipf(ref.FEMALE_FIRST_NAMES, 4.0)
_MALE_FIRST = _zipf(ref.MALE_FIRST_NAMES, 4.0)
_LAST = _zipf(_SURNAMES, 20.0)
_CITY_NAMES = tuple(name for name, _ in CITIES)
_CITY_WEIGHTS = list(itertools.accumulate(weight for _, weight in CITIES))
_DOMAINS = tuple(domain for domain, _ in ref.EMAIL_DOMAINS)
_DOMAIN_WEIGHTS = list(itertools.accumulate(weight for _, weight in ref.EMAIL_DOMAINS))


def _pick(rng: random.Random, weighted: tuple[tuple[str, ...], list[float]]) -> str:
    return rng.choices(weighted[0], cum_weights=weighted[1])[0]


def _person(rng: random.Random) -> dict[str, object]:
    female = rng.random() < 0.55
    first = _pick(rng, _FEMALE_FIRST if female else _MALE_FIRST)
    last = _pick(rng, _LAST)
    if female:
        last = ref.female_surname(last)
    birthday = _BIRTH_FIRST + datetime.timedelta(days=rng.randrange(_BIRTH_DAYS))
    return {
        "female": female,
        "first_name": first,
        "last_name": last,
        "email": _email(rng, first, last, birthday) if rng.random() < 0.85 else None,
        "phone": _phone(rng) if rng.random() < 0.9 else None,
        "birthday": birthday if rng.random() < 0.8 else None,
        "city": _pick(rng, (_CITY_NAMES, _CITY_WEIGHTS)) if rng.random() < 0.9 else None,
    }


def _email(rng: random.Random, first: str, last: str, birthday: datetime.date) -> str:
    f, la = ref.translit(first), ref.translit(last)
    local = rng.choice(
        (
            f"{f}.{la}",
            f"{f[0]}{la}",
            f"{la}.{f}",
            f"{la}{birthday.year % 100:02d}",
            f"{f}_{la}{rng.randrange(1, 999)}",
            f"{f}{rng.randrange(1970, 2010)}",
        )
    )
    return f"{local}@{_pick(rng, (_DOMAINS, _DOMAIN_WEIGHTS))}"


def _phone(rng: random.Random) -> str:
    return f"+79{rng.randrange(10**9):09d}"


def _make_households(rng: random.Random, people: list[dict[str, object]]) -> None:
    """Turn 5% of people into a relative of another: same surname and city, and often the
    same phone or e-mail. They are different people: a dedupe must not merge them."""
    for n in range(1, len(people)):
        if rng.random() >= 0.05:
            continue
        other, person = people[rng.randrange(n)], people[n]
        last = str(other["last_name"])
        if other["female"] and last.endswith("а") and not person["female"]:
            last = last[:-1]
        elif not other["female"] and person["female"]:
            last = ref.female_surname(last)
        if person["first_name"] == other["first_name"]:
            continue  # a parent and child of one name would be indistinguishable
        person["last_name"] = last
        person["city"] = other["city"]
        if rng.random() < 0.4:
            person["phone"] = other["phone"]
        if rng.random() < 0.2:
            person["email"] = other["email"]


def _make_contacts_unique(rng: random.Random, people: list[dict[str, object]]) -> None:
    """Two people never hold one phone or e-mail by chance (households share on purpose)."""
    emails: set[object] = set()
    phones: set[object] = set()
    for person in people:
        while person["email"] is not None and person["email"] in emails:
            local, domain = str(person["email"]).split("@")
            person["email"] = f"{local}{rng.randrange(10, 99)}@{domain}"
        while person["phone"] is not None and person["phone"] in phones:
            person["phone"] = _phone(rng)
        emails.add(person["email"])
        phones.add(person["phone"])


def _corrupt(
    rng: random.Random, person: dict[str, object]
) -> tuple[dict[str, object], tuple[str, ...]]:
    """A copy of ``person`` as another CRM import would hold it."""
    copy = dict(person)
    count = rng.choices((1, 2, 3), weights=(0.45, 0.35, 0.2))[0]
    names = rng.sample(list(_CORRUPTIONS), k=len(_CORRUPTIONS))
    applied: list[str] = []
    for name in names:
        if len(applied) == count:
            break
        if _CORRUPTIONS[name](rng, copy):
            applied.append(name)
    return copy, tuple(applied)


def _typo(rng: random.Random, text: str) -> str:
    if len(text) < 3:
        return text
    at = rng.randrange(1, len(text))
    kind = rng.randrange(4)
    if kind == 0:  # a confusable letter, or any letter
        ch = text[at].lower()
        new = _CONFUSED.get(ch, rng.choice(_CYRILLIC))
        return text[:at] + new + text[at + 1 :]
    if kind == 1 and len(text) > 4:  # a letter dropped
        return text[:at] + text[at + 1 :]
    if kind == 2 and at + 1 < len(text):  # two letters swapped
        return text[:at] + text[at + 1] + text[at] + text[at + 2 :]
    return text[:at] + text[at] + text[at:]  # a letter doubled


def _name_typo(field: str) -> Callable[[random.Random, dict[str, object]], bool]:
    def apply(rng: random.Random, row: dict[str, object]) -> bool:
        value = row[field]
        if not isinstance(value, str) or not value.isalpha() or not _is_cyrillic(value):
            return False
        row[field] = _typo(rng, value)
        return True

    return apply


def _is_cyrillic(text: str) -> bool:
    return any("а" <= ch.lower() <= "я" or ch in "ёЁ" for ch in text)


def _latin_names(rng: random.Random, row: dict[str, object]) -> bool:
    scheme = rng.randrange(len(_SCHEMES))
    for name in ("first_name", "last_name"):
        value = row[name]
        if isinstance(value, str):
            row[name] = transliterate(value, scheme)
    if isinstance(row["city"], str) and rng.random() < 0.5:
        row["city"] = transliterate(str(row["city"]), scheme)
    return True


def _upper_names(rng: random.Random, row: dict[str, object]) -> bool:
    for name in ("first_name", "last_name"):
        value = row[name]
        if isinstance(value, str):
            row[name] = value.upper()
    return True


def _swap_day_month(rng: random.Random, row: dict[str, object]) -> bool:
    day = row["birthday"]
    if not isinstance(day, datetime.date) or day.day > 12 or day.day == day.month:
        return False
    row["birthday"] = day.replace(day=day.month, month=day.day)
    return True


def _year_off(rng: random.Random, row: dict[str, object]) -> bool:
    day = row["birthday"]
    if not isinstance(day, datetime.date) or (day.month, day.day) == (2, 29):
        return False
    row["birthday"] = day.replace(year=day.year + rng.choice((-1, 1, -10, 10)))
    return True


def _other_domain(rng: random.Random, row: dict[str, object]) -> bool:
    email = row["email"]
    if not isinstance(email, str):
        return False
    local, domain = email.split("@")
    others = [d for d in _DOMAINS if d != domain]
    row["email"] = f"{local}@{rng.choice(others)}"
    return True


def _new_email(rng: random.Random, row: dict[str, object]) -> bool:
    birthday = row["birthday"]
    born = birthday if isinstance(birthday, datetime.date) else _BIRTH_FIRST
    first, last = str(row["first_name"]), str(row["last_name"])
    if not (_is_cyrillic(first) and _is_cyrillic(last)):
        return False
    row["email"] = _email(rng, first, last, born)
    return True


def _new_phone(rng: random.Random, row: dict[str, object]) -> bool:
    row["phone"] = _phone(rng)
    return True


def _missing(field: str) -> Callable[[random.Random, dict[str, object]], bool]:
    def apply(rng: random.Random, row: dict[str, object]) -> bool:
        if row[field] is None:
            return False
        row[field] = None
        return True

    return apply


def _moved(rng: random.Random, row: dict[str, object]) -> bool:
    row["city"] = _pick(rng, (_CITY_NAMES, _CITY_WEIGHTS))
    return True


_CORRUPTIONS: dict[str, Callable[[random.Random, dict[str, object]], bool]] = {
    "first_name_typo": _name_typo("first_name"),
    "last_name_typo": _name_typo("last_name"),
    "latin_names": _latin_names,
    "upper_names": _upper_names,
    "day_month_swapped": _swap_day_month,
    "year_off": _year_off,
    "other_email_domain": _other_domain,
    "new_email": _new_email,
    "new_phone": _new_phone,
    "email_missing": _missing("email"),
    "phone_missing": _missing("phone"),
    "birthday_missing": _missing("birthday"),
    "city_missing": _missing("city"),
    "moved_city": _moved,
}
