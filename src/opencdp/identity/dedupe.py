"""Probabilistic matching of customer records (``opencdp identity dedupe``), with Splink.

``find_matches(records, DedupeSettings())`` returns one row per candidate pair of
records whose match probability is at least ``review_at``: ``merge`` at or above
``auto_merge_at``, ``review`` below it, with the evidence a person needs to decide.
It runs Splink's Fellegi-Sunter model on its own in-memory DuckDB, whatever store the
server uses.

How a pair is scored
--------------------
Values are normalised first: names and cities to a *transliteration key* that
spells Cyrillic and its usual Latin spellings alike, ignoring case, ё and
punctuation (``Юлия``, ``Yulia``, ``Iuliia`` and ``Julia`` are all ``iulia``);
e-mails to lowercase, with a *local key* (the part before ``@`` without ``+tags``,
dots, dashes and underscores); phones to digits. Then each field is compared at
levels, from the strongest agreement down (``COMPARISONS``): names by equal key,
then Jaro-Winkler on the key; e-mail by address, then local part; phone by number,
then its last 7 digits; birthday exact, day and month swapped, or two of year,
month and day equal; city by key. Every level has an m probability (how often
duplicates agree this way) and a u probability (how often two different people
do); a pair's match weight is the sum of ``log2(m/u)`` over its fields plus the
prior's. Agreeing on a common first name, surname or city counts for less than on
a rare one (Splink's term-frequency adjustment).

Two things the model cannot see are handled by hand. A local part made only of
letters (``anna.pavlova``) is mostly the name again, which the names already
counted, so it weighs nothing. And relatives share phones, e-mails, surnames and
cities, so a pair whose first names differ is never ``merge``, only ``review``.

Blocking
--------
Only pairs that share a *blocking key* are scored, about 1.5 million for 100k
records instead of five billion:

- ``bk_phone``: the last 7 digits of the phone (also catches ``8...`` vs ``+7...``);
- ``bk_email``: the e-mail local key (catches another provider);
- ``bk_birthday``: the birthday and the first letter of the surname key;
- ``bk_surname_city``: the surname key and the city key;
- ``bk_name``: the first-name key and the surname key.

A key value held by more than ``max_block_size`` records is not used for blocking
(a shop's placeholder, or one huge family name in one city): its pairs would cost
more than they find. Phones and e-mails held by more than ``max_shared_contact``
records are placeholders (``test@test.ru``, ``+70000000000``) and are ignored
altogether, since they say nothing about who someone is.

Training, and small inputs
--------------------------
With at least ``min_records_for_training`` records the model is trained on the
input: the prior from the pairs that pass ``DETERMINISTIC_RULES`` (assuming they
are ``deterministic_recall`` of all duplicates), u probabilities from a seeded
sample of random pairs, and m probabilities by expectation maximisation over the
pairs of each ``EM_BLOCKING`` rule that has at least ``min_training_pairs`` of
them. Training runs on one thread so that the same input gives the same model.
Smaller inputs have too few pairs to estimate anything from, so they are scored
with the fixed m/u probabilities of ``COMPARISONS`` (fitted on 100k synthetic
records, see ``synthetic.py``) and a prior from ``expected_duplicate_share``.
Levels training cannot estimate (a column that is always empty) keep the fixed
values.

The output is sorted by pair and is the same for the same input and settings.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    from splink import Linker

logger = logging.getLogger(__name__)

INPUT_COLUMNS: tuple[str, ...] = (
    "profile_id",
    "first_name",
    "last_name",
    "email",
    "phone",
    "birthday",
    "city",
)

OUTPUT_SCHEMA = pa.schema(
    [
        ("profile_id_l", pa.string()),
        ("profile_id_r", pa.string()),
        ("match_probability", pa.float64()),
        ("match_weight", pa.float64()),
        ("decision", pa.string()),
        ("evidence", pa.string()),
    ]
)


@dataclass
class DedupeSettings:
    """How ``find_matches`` scores and filters pairs. The defaults suit a laptop and 100k records."""

    auto_merge_at: float = 0.95
    """Pairs at or above this match probability are ``merge``."""
    review_at: float = 0.70
    """Pairs at or above this (and below ``auto_merge_at``) are ``review``; lower ones are dropped."""
    seed: int = 42
    """Seed of the random pair sample used for training; same seed, same output."""
    max_block_size: int = 1000
    """A blocking key value shared by more records than this is not used to make pairs."""
    max_shared_contact: int = 20
    """A phone or e-mail held by more records than this is a placeholder and is ignored."""
    min_records_for_training: int = 1000
    """Below this many records, score with the fixed m/u probabilities instead of training."""
    min_training_pairs: int = 200
    """Expectation maximisation on fewer blocked pairs than this is skipped (too noisy)."""
    training_pairs: int = 5_000_000
    """Random pairs sampled to estimate the u probabilities."""
    deterministic_recall: float = 0.8
    """Assumed share of duplicate pairs that agree on a contact or on names and birthday."""
    expected_duplicate_share: float = 0.1
    """Prior share of records that duplicate another, used when the model is not trained."""
    threads: int | None = None
    """DuckDB threads; None uses every core."""

    def validate(self) -> None:
        if not 0 < self.review_at <= self.auto_merge_at <= 1:
            raise ValueError(
                "need 0 < review_at <= auto_merge_at <= 1, got "
                f"review_at={self.review_at}, auto_merge_at={self.auto_merge_at}"
            )
        if not 0 < self.expected_duplicate_share < 1:
            raise ValueError(
                f"expected_duplicate_share must be in (0, 1), got {self.expected_duplicate_share}"
            )
        if not 0 < self.deterministic_recall <= 1:
            raise ValueError(
                f"deterministic_recall must be in (0, 1], got {self.deterministic_recall}"
            )
        for name in ("max_block_size", "max_shared_contact", "training_pairs"):
            if getattr(self, name) < 2:
                raise ValueError(f"{name} must be at least 2, got {getattr(self, name)}")


@dataclass(frozen=True)
class Level:
    """One way two values can agree, with its fixed m and u probabilities."""

    label: str
    sql: str
    m: float
    u: float
    tf: str | None = None
    """Column whose value frequency adjusts u (common values count for less)."""
    fixed: bool = False
    """Keep m and u as given: training must not move them."""


@dataclass(frozen=True)
class Comparison:
    field: str
    """Input column shown in the evidence."""
    null_sql: str
    levels: tuple[Level, ...]
    """From the strongest agreement down; the last one is ``ELSE``."""


def _name_levels(key: str, m: Sequence[float], u: Sequence[float]) -> tuple[Level, ...]:
    # One top level for any script: "Olga" vs "Ольга" is the same evidence as
    # "Ольга" vs "Ольга" (only the spelling differs, not the name).
    return (
        Level("same (ignoring case, ё and script)", f"{key}_l = {key}_r", m[0], u[0], tf=key),
        Level(
            "Jaro-Winkler >= 0.92",
            f"jaro_winkler_similarity({key}_l, {key}_r) >= 0.92",
            m[1],
            u[1],
        ),
        Level(
            "Jaro-Winkler >= 0.80",
            f"jaro_winkler_similarity({key}_l, {key}_r) >= 0.80",
            m[2],
            u[2],
        ),
        Level("different", "ELSE", m[3], u[3]),
    )


COMPARISONS: tuple[Comparison, ...] = (
    Comparison(
        "first_name",
        "fn_key_l IS NULL OR fn_key_r IS NULL",
        _name_levels("fn_key", m=(0.9, 0.075, 0.02, 0.005), u=(0.021, 0.003, 0.017, 0.959)),
    ),
    Comparison(
        "last_name",
        "ln_key_l IS NULL OR ln_key_r IS NULL",
        _name_levels("ln_key", m=(0.89, 0.09, 0.015, 0.005), u=(0.0025, 0.003, 0.0085, 0.986)),
    ),
    Comparison(
        "email",
        "em_norm_l IS NULL OR em_norm_r IS NULL",
        (
            Level("exact", "em_norm_l = em_norm_r", 0.68, 0.000003),
            Level(
                "same local part with digits",
                "em_local_l = em_local_r AND regexp_matches(em_local_l, '[0-9]')",
                0.09,
                0.000005,
            ),
            # "anna.pavlova" at two providers is as often two Anna Pavlovas as one:
            # a local part made of the name repeats the name evidence, so it weighs 0.
            Level(
                "same local part made of letters",
                "em_local_l = em_local_r",
                0.01,
                0.01,
                fixed=True,
            ),
            Level("different", "ELSE", 0.16, 0.99998),
        ),
    ),
    Comparison(
        "phone",
        "ph_l IS NULL OR ph_r IS NULL",
        (
            Level("exact", "ph_l = ph_r", 0.8, 0.000004),
            Level("same last 7 digits", "ph7_l = ph7_r", 0.01, 0.00001),
            Level("different", "ELSE", 0.19, 0.999995),
        ),
    ),
    Comparison(
        "birthday",
        "bd_l IS NULL OR bd_r IS NULL",
        (
            Level("exact", "bd_l = bd_r", 0.77, 0.000065),
            Level(
                "day and month swapped",
                "year(bd_l) = year(bd_r) AND day(bd_l) = month(bd_r) AND month(bd_l) = day(bd_r)",
                0.05,
                0.000016,
            ),
            Level(
                "two of year, month, day equal",
                "(year(bd_l) = year(bd_r))::int + (month(bd_l) = month(bd_r))::int"
                " + (day(bd_l) = day(bd_r))::int >= 2",
                0.17,
                0.0048,
            ),
            Level("different", "ELSE", 0.01, 0.995),
        ),
    ),
    Comparison(
        "city",
        "city_key_l IS NULL OR city_key_r IS NULL",
        (
            Level("same", "city_key_l = city_key_r", 0.83, 0.11, tf="city_key"),
            Level("different", "ELSE", 0.17, 0.89),
        ),
    ),
)

# Pairs that are almost surely one person: counted to estimate the prior
# (``deterministic_recall`` says what share of all duplicates they are).
DETERMINISTIC_RULES: tuple[tuple[str, ...], ...] = (
    ("em_norm", "fn_key"),
    ("ph", "fn_key"),
    ("fn_key", "ln_key", "bd"),
)
# Expectation maximisation runs on pairs blocked on each of these in turn; each
# estimates the m probabilities of the fields it does not block on. Blocking on the
# phone alone would train on relatives who share it, so the first name comes too.
EM_BLOCKING: tuple[tuple[str, ...], ...] = (("bd",), ("ph", "fn_key"))

BLOCKING_KEYS: tuple[str, ...] = (
    "bk_phone",
    "bk_email",
    "bk_birthday",
    "bk_surname_city",
    "bk_name",
)


def find_matches(records: pa.Table, settings: DedupeSettings | None = None) -> pa.Table:
    """Candidate duplicate pairs of ``records`` with match probability >= ``review_at``.

    ``records`` has the string columns ``profile_id`` (unique, not null), ``first_name``,
    ``last_name``, ``email``, ``phone`` (E.164) and ``city``, and ``birthday`` (date);
    all but ``profile_id`` may be null. Returns ``OUTPUT_SCHEMA`` rows sorted by pair,
    with ``profile_id_l < profile_id_r``.
    """
    settings = settings or DedupeSettings()
    settings.validate()
    records = _validated(records)
    if records.num_rows < 2:
        return OUTPUT_SCHEMA.empty_table()
    features = _features(records, settings)

    # Splink is imported here: it takes a second to import and only dedupe needs it.
    from splink import DuckDBAPI, Linker

    db_api = DuckDBAPI(":memory:")
    con = db_api.duckdb_con
    try:
        default_threads = con.sql("SELECT current_setting('threads')").fetchall()[0][0]
        threads = int(settings.threads or default_threads)
        table = db_api.register(features, table_name="customers")
        with _quiet_splink():
            model = _splink_settings(settings, records.num_rows)
            trained = records.num_rows >= settings.min_records_for_training
            if trained:
                # Parallel sums of doubles differ in the last bit from run to run;
                # training on one thread makes the model, and so the output, repeatable.
                con.sql("SET threads TO 1")
                model = _trained(Linker(table, model, log_level=None), features, settings)
            con.sql(f"SET threads TO {threads}")
            linker = Linker(table, model, log_level=None)
            predictions = linker.inference.predict(
                threshold_match_probability=settings.review_at, warning_mode="never"
            )
        relation = predictions.as_duckdbpyrelation().order("profile_id_l, profile_id_r")
        pairs = relation.to_arrow_table()
    finally:
        con.close()
    logger.info(
        "dedupe: %d records, %s model (prior %.3g), %d pairs at or above %.2f",
        records.num_rows,
        "trained" if trained else "fixed",
        model["probability_two_random_records_match"],
        pairs.num_rows,
        settings.review_at,
    )
    return _output(pairs, settings)


@contextlib.contextmanager
def _quiet_splink() -> Iterator[None]:
    """Splink logs every training step and every level it could not estimate; our
    caller wants one result, so only its errors get through."""
    splink_logger = logging.getLogger("splink")
    level = splink_logger.level
    splink_logger.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        splink_logger.setLevel(level)


def _validated(records: pa.Table) -> pa.Table:
    if not isinstance(records, pa.Table):
        raise TypeError(f"records must be a pyarrow.Table, got {type(records).__name__}")
    missing = [name for name in INPUT_COLUMNS if name not in records.column_names]
    if missing:
        raise ValueError(
            f"records lack the column(s) {', '.join(missing)}; "
            f"find_matches needs {', '.join(INPUT_COLUMNS)}"
        )
    columns = {}
    for name in INPUT_COLUMNS:
        target = pa.date32() if name == "birthday" else pa.string()
        try:
            columns[name] = pc.cast(records.column(name), target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as error:
            raise ValueError(
                f"column {name} must be {target}, got {records.column(name).type}: {error}"
            ) from error
    ids = columns["profile_id"]
    if ids.null_count:
        raise ValueError("column profile_id has nulls; every record needs a profile_id")
    counts = pc.value_counts(ids)
    repeated = pc.filter(counts.field("values"), pc.greater(counts.field("counts"), 1))
    if len(repeated):
        sample = ", ".join(repr(v) for v in repeated.to_pylist()[:5])
        raise ValueError(
            f"column profile_id must be unique; {len(repeated)} value(s) repeat, e.g. {sample}"
        )
    return pa.table(columns)


# Cyrillic to Latin, one common spelling; name_key folds the others onto it.
_TO_LATIN = str.maketrans(
    {
        "а": "a", "б": "b", "в": "v", "г": "g", "д": "d", "е": "e", "ё": "e", "ж": "zh",
        "з": "z", "и": "i", "й": "y", "к": "k", "л": "l", "м": "m", "н": "n", "о": "o",
        "п": "p", "р": "r", "с": "s", "т": "t", "у": "u", "ф": "f", "х": "kh", "ц": "ts",
        "ч": "ch", "ш": "sh", "щ": "shch", "ъ": "", "ы": "y", "ь": "", "э": "e", "ю": "yu",
        "я": "ya", "і": "i", "ї": "i", "є": "e",
    }
)  # fmt: skip
# Latin spellings of one Cyrillic sound, folded to one (order matters: shch before sch).
_FOLDS: tuple[tuple[str, str], ...] = (
    ("shch", "sh"), ("sch", "sh"), ("tch", "ch"), ("kh", "h"), ("ts", "c"), ("tz", "c"),
    ("x", "ks"), ("w", "v"), ("ph", "f"), ("q", "k"), ("j", "y"),
)  # fmt: skip
_NOT_LETTER = re.compile(r"[^\w]|[\d_]")
_YO = re.compile(r"(?<=[bcdfghklmnprstvz])yo")  # Fyodor, Semyon, Artyom: ё written yo
_DOUBLED = re.compile(r"(.)\1+")


def name_key(text: str) -> str:
    """A spelling-agnostic key: Cyrillic and its usual Latin transliterations agree.

    ``Юлия``, ``Yulia``, ``Julia``, ``Iuliia`` -> ``iulia``; ``Дмитрий``, ``Dmitry``,
    ``Dmitriy`` -> ``dmitri``; ``Щукин``, ``Shchukin``, ``Schukin`` -> ``shukin``.
    """
    key = _NOT_LETTER.sub("", text.lower()).translate(_TO_LATIN)
    key = _YO.sub("e", key)
    for spelling, folded in _FOLDS:
        key = key.replace(spelling, folded)
    if key.startswith("ye"):  # Yelena, Yevgeny, Jekaterina
        key = key[1:]
    return _DOUBLED.sub(r"\1", key.replace("y", "i"))


def _map_distinct(values: pa.ChunkedArray, function: Callable[[str], str]) -> pa.Array:
    """``function`` over the distinct values only (names repeat a lot); empty results are null."""
    distinct = pc.unique(values.combine_chunks().drop_null())
    mapped = pa.array([function(v) or None for v in distinct.to_pylist()], pa.string())
    return pc.take(mapped, pc.index_in(values, value_set=distinct))


def _placeholders_to_null(values: pa.Array, limit: int) -> pa.Array:
    """Null out values held by more than ``limit`` records."""
    counts = pc.value_counts(values.drop_null())
    common = pc.filter(counts.field("values"), pc.greater(counts.field("counts"), limit))
    if not len(common):
        return values
    return pc.if_else(pc.is_in(values, value_set=common), pa.scalar(None, values.type), values)


def _join(*parts: pa.Array) -> pa.Array:
    return pc.binary_join_element_wise(*parts, "|")


def _features(records: pa.Table, settings: DedupeSettings) -> pa.Table:
    """The records with the normalised columns and blocking keys Splink compares on."""
    email = pc.utf8_lower(pc.utf8_trim_whitespace(records.column("email")).combine_chunks())
    email = pc.if_else(
        pc.match_substring_regex(email, r"^[^@\s]+@[^@\s]+\.[^@\s]+$"),
        email,
        pa.scalar(None, pa.string()),
    )
    email = _placeholders_to_null(email, settings.max_shared_contact)
    local = pc.replace_substring_regex(email, r"(\+[^@]*)?@.*$", "")
    local = pc.replace_substring_regex(local, r"[._-]", "")
    local = pc.if_else(pc.equal(local, ""), pa.scalar(None, pa.string()), local)

    phone = pc.replace_substring_regex(records.column("phone").combine_chunks(), r"\D", "")
    phone = pc.if_else(
        pc.greater_equal(pc.utf8_length(phone), 7), phone, pa.scalar(None, pa.string())
    )
    phone = _placeholders_to_null(phone, settings.max_shared_contact)
    phone7 = pc.utf8_slice_codeunits(phone, -7)

    first, last = records.column("first_name"), records.column("last_name")
    fn_key, ln_key = _map_distinct(first, name_key), _map_distinct(last, name_key)
    city_key = _map_distinct(records.column("city"), name_key)
    birthday = records.column("birthday").combine_chunks()

    def capped(keys: pa.Array) -> pa.Array:
        return _placeholders_to_null(keys, settings.max_block_size)

    features = {
        "fn_key": fn_key,
        "ln_key": ln_key,
        "em_norm": email,
        "em_local": local,
        "ph": phone,
        "ph7": phone7,
        "bd": birthday,
        "city_key": city_key,
        "bk_phone": capped(phone7),
        "bk_email": capped(local),
        "bk_birthday": capped(
            _join(pc.cast(birthday, pa.string()), pc.utf8_slice_codeunits(ln_key, 0, 1))
        ),
        "bk_surname_city": capped(_join(ln_key, city_key)),
        "bk_name": capped(_join(fn_key, ln_key)),
    }
    for name, column in features.items():
        records = records.append_column(name, column)
    return records


def _splink_settings(settings: DedupeSettings, records: int) -> dict[str, Any]:
    """The untrained model as a Splink settings dict (the format training returns too)."""
    from splink import block_on

    comparisons = []
    for comparison in COMPARISONS:
        levels: list[dict[str, Any]] = [
            {
                "sql_condition": comparison.null_sql,
                "label_for_charts": "missing",
                "is_null_level": True,
            }
        ]
        for level in comparison.levels:
            spec: dict[str, Any] = {
                "sql_condition": level.sql,
                "label_for_charts": level.label,
                "m_probability": level.m,
                "u_probability": level.u,
            }
            if level.tf is not None:
                spec["tf_adjustment_column"] = level.tf
            if level.fixed:
                spec["fix_m_probability"] = spec["fix_u_probability"] = True
            levels.append(spec)
        comparisons.append({"output_column_name": comparison.field, "comparison_levels": levels})
    return {
        "link_type": "dedupe_only",
        "unique_id_column_name": "profile_id",
        "comparisons": comparisons,
        "blocking_rules_to_generate_predictions": [block_on(key) for key in BLOCKING_KEYS],
        "probability_two_random_records_match": _prior(settings, records),
        "retain_matching_columns": True,
        "retain_intermediate_calculation_columns": True,
        "additional_columns_to_retain": list(INPUT_COLUMNS[1:]),
    }


def _trained(linker: Linker, features: pa.Table, settings: DedupeSettings) -> dict[str, Any]:
    """The model trained on the input, as a Splink settings dict."""
    from splink import block_on

    linker.training.estimate_probability_two_random_records_match(
        [block_on(*rule) for rule in DETERMINISTIC_RULES], recall=settings.deterministic_recall
    )
    linker.training.estimate_u_using_random_sampling(
        max_pairs=settings.training_pairs, seed=settings.seed
    )
    for rule in EM_BLOCKING:
        # EM on a handful of pairs (a column that is almost always empty) is noise:
        # those fields keep their fixed m probabilities.
        if _pair_count(features, rule) >= settings.min_training_pairs:
            linker.training.estimate_parameters_using_expectation_maximisation(
                block_on(*rule), estimate_without_term_frequencies=True
            )
    model: dict[str, Any] = linker.misc.save_model_to_json()
    if not model["probability_two_random_records_match"]:
        # No pair passed a deterministic rule: fall back to the untrained prior
        # rather than declare every pair impossible.
        model["probability_two_random_records_match"] = _prior(settings, features.num_rows)
    return model


def _pair_count(features: pa.Table, columns: Sequence[str]) -> int:
    """How many pairs of records agree on all ``columns`` (nulls agree with nothing)."""
    groups = features.select(list(columns)).drop_null().group_by(list(columns))
    sizes = groups.aggregate([([], "count_all")]).column("count_all").to_pylist()
    return sum(size * (size - 1) // 2 for size in sizes)


def _prior(settings: DedupeSettings, records: int) -> float:
    """Untrained probability that two random records match: expected duplicate pairs
    over all pairs."""
    return min(0.5, 2 * settings.expected_duplicate_share / max(1, records - 1))


def _output(pairs: pa.Table, settings: DedupeSettings) -> pa.Table:
    evidence = {comparison.field: _field_evidence(pairs, comparison) for comparison in COMPARISONS}
    probability = pairs.column("match_probability").to_pylist()
    decisions, texts = [], []
    for row, p in enumerate(probability):
        item = {name: rows[row] for name, rows in evidence.items()}
        # Relatives share phones, e-mails, surnames and cities; what tells them
        # apart is the first name, so different first names are never merged blind.
        named_apart = item["first_name"]["level"] == "different"
        decisions.append("merge" if p >= settings.auto_merge_at and not named_apart else "review")
        texts.append(json.dumps(item, ensure_ascii=False))
    return pa.table(
        [
            pairs.column("profile_id_l"),
            pairs.column("profile_id_r"),
            pc.cast(pairs.column("match_probability"), pa.float64()),
            pc.cast(pairs.column("match_weight"), pa.float64()),
            pa.array(decisions, pa.string()),
            pa.array(texts, pa.string()),
        ],
        schema=OUTPUT_SCHEMA,
    )


def _field_evidence(pairs: pa.Table, comparison: Comparison) -> list[dict[str, object]]:
    """Per pair: the level this field agreed at, both values and its match weight."""
    # Splink numbers levels from the top one down to 0 (ELSE); the null level is -1.
    top = len(comparison.levels) - 1
    labels = {top - rank: level.label for rank, level in enumerate(comparison.levels)}
    labels[-1] = "missing"
    name = comparison.field
    weight = pairs.column(f"mw_{name}")
    if f"mw_tf_adj_{name}" in pairs.column_names:  # the term-frequency adjustment
        weight = pc.add(weight, pc.coalesce(pairs.column(f"mw_tf_adj_{name}"), 0.0))
    columns = zip(
        pairs.column(f"gamma_{name}").to_pylist(),
        pairs.column(f"{name}_l").to_pylist(),
        pairs.column(f"{name}_r").to_pylist(),
        pc.round(pc.coalesce(weight, 0.0), 2).to_pylist(),
        strict=True,
    )
    return [
        {"level": labels[gamma], "left": _plain(left), "right": _plain(right), "weight": w}
        for gamma, left, right, w in columns
    ]


def _plain(value: object) -> object:
    return value.isoformat() if isinstance(value, datetime.date) else value
