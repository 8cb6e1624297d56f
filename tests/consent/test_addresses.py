"""Suppression addresses are normalised per channel; a bad one is refused naming the field."""

from __future__ import annotations

import pytest

from opencdp.consent.model import ConsentError
from opencdp.consent.suppressions import address_of


@pytest.mark.parametrize(
    ("channel", "raw", "expected"),
    [
        ("email", " Anna@Example.RU ", "anna@example.ru"),
        ("sms", "8 916 123-45-67", "+79161234567"),
        ("viber", "+7 916 123-45-67", "+79161234567"),  # Viber Business Messages: a phone number
        ("viber", "01234567890A=", "01234567890A="),  # the Viber Bot API: its own user id, as it is
        ("telegram", "123456789", "123456789"),
    ],
)
def test_addresses_are_normalised_per_channel(channel: str, raw: str, expected: str) -> None:
    assert address_of(channel, raw) == expected


@pytest.mark.parametrize(("channel", "raw"), [("email", "not-an-email"), ("sms", "+7 91"), ("viber", "+7 91"), ("push", " ")])
def test_bad_addresses_are_refused_naming_the_field(channel: str, raw: str) -> None:
    with pytest.raises(ConsentError) as error:
        address_of(channel, raw, field="address")
    assert error.value.field == "address"
