"""Masking personal data (``opencdp.privacy``) for keys with ``pii:mask``."""

from __future__ import annotations

import copy
import datetime as dt

import pytest

from opencdp.privacy import (
    PII_FIELDS,
    mask_email,
    mask_identifier,
    mask_ip,
    mask_name,
    mask_phone,
    mask_record,
    mask_text,
)


@pytest.mark.parametrize(
    ("email", "masked"),
    [
        ("anna.petrova@example.ru", "a***@example.ru"),
        ("ab@example.ru", "a***@example.ru"),
        ("a@example.ru", "***@example.ru"),  # a one-letter name is not shown at all
        ("иван@пример.рф", "и***@пример.рф"),
        ('"odd@local"@example.com', '"***@example.com'),  # the last @ separates the domain
        ("not-an-email", "***"),
        ("@example.ru", "***"),
        ("", ""),
    ],
)
def test_mask_email(email: str, masked: str) -> None:
    assert mask_email(email) == masked


@pytest.mark.parametrize(
    ("phone", "masked"),
    [
        ("+79161234567", "+7916*****67"),  # country and operator code, last 2 digits
        ("+7 (916) 123-45-67", "+7 (916) ***-**-67"),  # formatting is kept
        ("+12025550143", "+1202*****43"),
        ("+447911123456", "+447911****56"),
        ("89161234567", "*********67"),  # no country code: only the last 2 digits
        ("+999123456789", "+**********89"),  # not a known country
        ("+7916123", "+7****23"),  # too short to show the operator code: 4 digits stay hidden
        ("12345", "*****"),
        ("", ""),
    ],
)
def test_mask_phone(phone: str, masked: str) -> None:
    assert mask_phone(phone) == masked


@pytest.mark.parametrize(
    ("name", "masked"),
    [
        ("Anna", "A***"),
        ("Анна-Мария Петрова", "А***-М*** П***"),
        ("O'Brien", "O***"),
        ("Ю", "***"),
        ("  Zoë  ", "Z***"),
        ("Zoe\u0308", "Z***"),  # decomposed ë is one character after NFC
        ("", ""),
    ],
)
def test_mask_name(name: str, masked: str) -> None:
    assert mask_name(name) == masked


def test_mask_ip_and_text() -> None:
    assert mask_ip("203.0.113.42") == "203.0.113.*"
    assert mask_ip("2001:db8:85a3::8a2e:370:7334") == "2001:db8:85a3:*"
    assert mask_ip("not an ip") == "***"
    assert mask_text("ул. Ленина, 1") == "***"
    assert mask_text("") == ""


def test_mask_identifier() -> None:
    assert mask_identifier("email:anna@example.ru") == "email:a***@example.ru"
    assert mask_identifier("phone:+79161234567") == "phone:+7916*****67"
    assert mask_identifier("user_id:C0000001") == "user_id:C0000001"
    assert mask_identifier("loyalty_card:12345") == "loyalty_card:12345"


def test_mask_record_masks_known_keys_at_any_depth() -> None:
    profile = {
        "profile_id": "p_1",
        "traits": {
            "email": "anna.petrova@example.ru",
            "phone": "+79161234567",
            "firstName": "Анна",
            "last_name": "Петрова",
            "birthday": dt.date(1990, 5, 17),
            "address": {"city": "Тверь", "street": "ул. Ленина, 1"},
            "city": "Тверь",
            "bonus_balance": 120,
            "email_consent": True,
            "lastName": None,
        },
        "identities": [
            {"identifier": "email:anna@example.ru", "kind": "email"},
            {"identifier": "user_id:C1", "kind": "user_id"},
        ],
        "events": [{"context": {"ip": "203.0.113.42"}, "properties": {"order_id": "O-1", "total": 4990}}],
        "emails": ["email:b@example.ru", "phone:+79161234567"],
    }
    original = copy.deepcopy(profile)
    masked = mask_record(profile)
    assert profile == original  # the input is not changed
    assert masked == {
        "profile_id": "p_1",
        "traits": {
            "email": "a***@example.ru",
            "phone": "+7916*****67",
            "firstName": "А***",
            "last_name": "П***",
            "birthday": "***",
            "address": {"city": "***", "street": "***"},
            "city": "Тверь",
            "bonus_balance": 120,
            "email_consent": True,
            "lastName": None,
        },
        "identities": [
            {"identifier": "email:a***@example.ru", "kind": "email"},
            {"identifier": "user_id:C1", "kind": "user_id"},
        ],
        "events": [{"context": {"ip": "203.0.113.*"}, "properties": {"order_id": "O-1", "total": 4990}}],
        "emails": ["email:***@example.ru", "phone:+7916*****67"],
    }


def test_mask_record_key_spelling_lists_and_custom_fields() -> None:
    assert mask_record({"First_Name": "Anna", "E-mail": "anna@x.ru"}) == {"First_Name": "A***", "E-mail": "a***@x.ru"}
    assert mask_record({"email": ["anna@x.ru", "bob@y.ru"], "phone": 79161234567}) == {
        "email": ["a***@x.ru", "b***@y.ru"],
        "phone": "*********67",
    }
    assert mask_record([{"name": "Anna"}, ("x", 1)]) == [{"name": "A***"}, ["x", 1]]
    assert mask_record("email:anna@x.ru") == "email:a***@x.ru"
    assert mask_record(42) == 42
    custom = mask_record({"passport": "4510 123456", "name": "Sofa Oslo"}, pii_fields={"passport"})
    assert custom == {"passport": "***", "name": "Sofa Oslo"}
    assert "email" in PII_FIELDS and "first_name" in PII_FIELDS
