"""Probabilistic dedupe: quality against synthetic ground truth, evidence, and bad input."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pyarrow as pa
import pytest

from opencdp.identity.dedupe import OUTPUT_SCHEMA, DedupeSettings, find_matches, name_key
from opencdp.identity.synthetic import (
    RECORD_SCHEMA,
    SyntheticCustomers,
    generate_customers,
    pair_quality,
)


@pytest.fixture(scope="module")
def customers() -> SyntheticCustomers:
    return generate_customers(4000, duplicate_share=0.2, seed=7)


@pytest.fixture(scope="module")
def matches(customers: SyntheticCustomers) -> pa.Table:
    return find_matches(customers.records, DedupeSettings())


def table(*rows: dict[str, Any]) -> pa.Table:
    full = [{name: None for name in RECORD_SCHEMA.names} | row for row in rows]
    return pa.Table.from_pylist(full, schema=RECORD_SCHEMA)


def evidence(matches: pa.Table, row: int = 0) -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = json.loads(matches.column("evidence")[row].as_py())
    return result


def test_precision_and_recall_on_synthetic_customers(
    customers: SyntheticCustomers, matches: pa.Table
) -> None:
    quality = pair_quality(matches, customers)
    assert quality.true_pairs > 700
    assert quality.merge_precision >= 0.95, quality
    assert quality.merge_recall >= 0.85, quality
    assert quality.review_recall >= 0.90, quality


def test_small_input_scores_with_fixed_probabilities() -> None:
    customers = generate_customers(600, duplicate_share=0.2, seed=3)
    settings = DedupeSettings()
    assert customers.records.num_rows < settings.min_records_for_training
    quality = pair_quality(find_matches(customers.records, settings), customers)
    assert quality.merge_precision >= 0.9, quality
    assert quality.review_recall >= 0.85, quality


def test_output_shape_and_decisions(matches: pa.Table) -> None:
    settings = DedupeSettings()
    assert matches.schema == OUTPUT_SCHEMA
    rows = matches.to_pylist()
    assert rows
    pairs = [(r["profile_id_l"], r["profile_id_r"]) for r in rows]
    assert all(left < right for left, right in pairs)
    assert pairs == sorted(set(pairs))
    for row in rows:
        assert settings.review_at <= row["match_probability"] <= 1
        if row["decision"] == "merge":
            assert row["match_probability"] >= settings.auto_merge_at
        else:
            assert row["decision"] == "review"
            named_apart = json.loads(row["evidence"])["first_name"]["level"] == "different"
            assert row["match_probability"] < settings.auto_merge_at or named_apart


def test_same_input_and_seed_give_the_same_output(
    customers: SyntheticCustomers, matches: pa.Table
) -> None:
    again = find_matches(customers.records, DedupeSettings())
    assert again.equals(matches)
    assert generate_customers(4000, duplicate_share=0.2, seed=7).records.equals(customers.records)


def test_evidence_names_levels_and_shows_values() -> None:
    records = table(
        {
            "profile_id": "a",
            "first_name": "Юлия",
            "last_name": "Щукина",
            "email": "yulia.shchukina1990@mail.ru",
            "phone": "+79161234567",
            "birthday": datetime.date(1990, 3, 5),
            "city": "Москва",
        },
        {
            "profile_id": "b",
            "first_name": "Iuliia",
            "last_name": "SHCHUKINA",
            "email": "Yulia.Shchukina1990@yandex.ru",
            "phone": "+79161234567",
            "birthday": datetime.date(1990, 5, 3),
            "city": "Moskva",
        },
        {"profile_id": "c", "first_name": "Пётр", "last_name": "Сидоров", "city": "Тула"},
    )
    matches = find_matches(records, DedupeSettings())
    assert matches.num_rows == 1
    assert matches.column("profile_id_l")[0].as_py() == "a"
    assert matches.column("decision")[0].as_py() == "merge"
    found = evidence(matches)
    assert list(found) == ["first_name", "last_name", "email", "phone", "birthday", "city"]
    assert found["first_name"] == {
        "level": "same (ignoring case, ё and script)",
        "left": "Юлия",
        "right": "Iuliia",
        "weight": found["first_name"]["weight"],
    }
    assert found["first_name"]["weight"] > 0
    assert found["last_name"]["level"] == "same (ignoring case, ё and script)"
    assert found["email"]["level"] == "same local part with digits"
    assert found["phone"]["level"] == "exact"
    assert found["birthday"] == {
        "level": "day and month swapped",
        "left": "1990-03-05",
        "right": "1990-05-03",
        "weight": found["birthday"]["weight"],
    }
    assert found["city"]["level"] == "same"


def test_typos_and_missing_fields_in_evidence() -> None:
    records = table(
        {"profile_id": "1", "first_name": "Александр", "last_name": "Кузнецов",
         "phone": "+79035550011", "birthday": datetime.date(1985, 7, 21)},
        {"profile_id": "2", "first_name": "Алексанр", "last_name": "Кузнецов",
         "phone": "+79035550011", "birthday": datetime.date(1986, 7, 21)},
    )  # fmt: skip
    found = evidence(find_matches(records, DedupeSettings()))
    assert found["first_name"]["level"] == "Jaro-Winkler >= 0.92"
    assert found["birthday"]["level"] == "two of year, month, day equal"
    assert found["email"] == {"level": "missing", "left": None, "right": None, "weight": 0.0}


def test_relatives_sharing_contacts_are_never_merged_blind() -> None:
    family = {
        "last_name": "Орлова",
        "email": "orlovy.family@mail.ru",
        "phone": "+79261112233",
        "city": "Казань",
    }
    records = table(
        {"profile_id": "mother", "first_name": "Ирина", **family},
        {"profile_id": "daughter", "first_name": "Полина", **family},
    )
    matches = find_matches(records, DedupeSettings())
    assert "merge" not in matches.column("decision").to_pylist()


@pytest.mark.parametrize(
    ("names", "key"),
    [
        (("Юлия", "Yulia", "Julia", "Iuliia", "ЮЛИЯ"), "iulia"),
        (("Дмитрий", "Dmitry", "Dmitriy", "Dmitrii"), "dmitri"),
        (("Щукин", "Shchukin", "Schukin"), "shukin"),
        (("Фёдор", "Федор", "Fyodor", "Fedor"), "fedor"),
        (("Наталья", "Natalia", "Natal'ya", "Natalya"), "natalia"),
        (("Ксения", "Xenia", "Kseniya"), "ksenia"),
        (("Екатерина", "Yekaterina", "Ekaterina"), "ekaterina"),
        (("Цветкова", "Tsvetkova", "Cvetkova"), "cvetkova"),
        (("Санкт-Петербург", "Sankt-Peterburg"), "sanktpeterburg"),
    ],
)
def test_name_key_is_transliteration_agnostic(names: tuple[str, ...], key: str) -> None:
    assert {name_key(name) for name in names} == {key}


@pytest.mark.parametrize("rows", [0, 1])
def test_fewer_than_two_records_give_no_pairs(rows: int) -> None:
    records = table({"profile_id": "only", "first_name": "Анна"}).slice(0, rows)
    assert find_matches(records).equals(OUTPUT_SCHEMA.empty_table())


def test_all_null_columns() -> None:
    records = table(*({"profile_id": f"p{n}"} for n in range(50)))
    assert find_matches(records).num_rows == 0
    trained = DedupeSettings(min_records_for_training=2)
    assert find_matches(records, trained).num_rows == 0


def test_training_survives_an_empty_column(customers: SyntheticCustomers) -> None:
    records = customers.records.slice(0, 1500)
    no_phones = records.set_column(
        records.schema.get_field_index("phone"), "phone", pa.nulls(records.num_rows, pa.string())
    )
    partial = SyntheticCustomers(
        no_phones, customers.cluster_ids[:1500], customers.corruptions[:1500]
    )
    quality = pair_quality(find_matches(no_phones, DedupeSettings()), partial)
    assert quality.merge_precision >= 0.9, quality
    assert quality.review_recall >= 0.8, quality


def test_placeholder_contacts_and_huge_blocks_are_ignored() -> None:
    # 400 different people typed in with the shop's placeholder e-mail and phone,
    # all in one city with one surname: the placeholders prove nothing, and the
    # surname-city block is too big to pair up.
    records = generate_customers(400, duplicate_share=0.0, seed=5).records
    size = records.num_rows
    for name, value in (
        ("email", "noemail@shop.ru"),
        ("phone", "+70000000000"),
        ("last_name", "Иванов"),
        ("city", "Москва"),
    ):
        records = records.set_column(
            records.schema.get_field_index(name), name, pa.array([value] * size)
        )
    settings = DedupeSettings(max_block_size=100)
    matches = find_matches(records, settings)
    assert "merge" not in matches.column("decision").to_pylist()


def test_duplicate_profile_id_is_rejected() -> None:
    records = table({"profile_id": "p1"}, {"profile_id": "p2"}, {"profile_id": "p1"})
    with pytest.raises(ValueError, match=r"profile_id must be unique.*'p1'"):
        find_matches(records)


def test_null_profile_id_is_rejected() -> None:
    with pytest.raises(ValueError, match="profile_id has nulls"):
        find_matches(table({"profile_id": "p1"}, {"first_name": "Анна"}))


@pytest.mark.parametrize("column", ["profile_id", "email", "birthday"])
def test_missing_column_is_named(column: str) -> None:
    records = table({"profile_id": "p1"}, {"profile_id": "p2"}).drop_columns([column])
    with pytest.raises(ValueError, match=f"lack the column\\(s\\) {column}"):
        find_matches(records)


def test_wrong_column_type_is_named() -> None:
    records = table({"profile_id": "p1"}, {"profile_id": "p2"})
    records = records.set_column(
        records.schema.get_field_index("birthday"), "birthday", pa.array(["1990-01-01", "vchera"])
    )
    with pytest.raises(ValueError, match="column birthday must be date32"):
        find_matches(records)


def test_thresholds_are_checked() -> None:
    with pytest.raises(ValueError, match="review_at <= auto_merge_at"):
        find_matches(table({"profile_id": "p1"}), DedupeSettings(review_at=0.9, auto_merge_at=0.8))


def test_synthetic_customers_have_known_duplicates(customers: SyntheticCustomers) -> None:
    records = customers.records
    assert records.schema == RECORD_SCHEMA
    assert records.num_rows == 4000
    assert len(set(customers.cluster_ids)) == 3200
    corrupted = [applied for applied in customers.corruptions if applied]
    assert len(corrupted) == 800
    kinds = {kind for applied in corrupted for kind in applied}
    assert {"latin_names", "day_month_swapped", "other_email_domain", "phone_missing"} <= kinds
    assert any(name and name.isascii() for name in records.column("first_name").to_pylist())
