"""Normalisation and hashing as Meta and Google document them, against known vectors."""

from __future__ import annotations

import hashlib

import pytest

from channels import hashing

# sha256("test@example.com"), a widely published vector.
TEST_EMAIL_SHA256 = "973dfe463ec85785f5f95af5ba3906eedb2d931c24e69824a89ea65dba4e813b"


def test_known_vector() -> None:
    assert hashing.sha256_hex("test@example.com") == TEST_EMAIL_SHA256
    assert hashing.meta_email_hash("  Test@Example.COM \n") == TEST_EMAIL_SHA256
    assert hashing.google_email_hash(" TEST@example.com") == TEST_EMAIL_SHA256


def test_hash_is_lowercase_hex() -> None:
    value = hashing.meta_email_hash("A@B.C")
    assert len(value) == 64
    assert value == value.lower()
    assert value == hashlib.sha256(b"a@b.c").hexdigest()


def test_meta_email_keeps_dots_and_plus() -> None:
    assert hashing.normalize_email_meta(" Cloudy.SF+shop@Gmail.com ") == "cloudy.sf+shop@gmail.com"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # The examples of Google's "Format user data" page.
        ("cloudy.sanfrancisco+shopping@gmail.com", "cloudysanfrancisco@gmail.com"),
        ("user.name+NYC@Example.com", "user.name+nyc@example.com"),
        ("  Dana.M @ googlemail.com ", "danam@googlemail.com"),
        ("quinn@CYMBALGROUP.com", "quinn@cymbalgroup.com"),
    ],
)
def test_google_email_normalisation(raw: str, expected: str) -> None:
    assert hashing.normalize_email_google(raw) == expected


@pytest.mark.parametrize(
    ("raw", "meta", "google"),
    [
        ("+1 (800) 555-0100", "18005550100", "+18005550100"),
        ("0031 6 12345678", "31612345678", "+31612345678"),
        ("+44 844 412 4653", "448444124653", "+448444124653"),
    ],
)
def test_phone_normalisation(raw: str, meta: str, google: str) -> None:
    assert hashing.normalize_phone_meta(raw) == meta
    assert hashing.normalize_phone_google(raw) == google
    assert hashing.meta_phone_hash(raw) == hashlib.sha256(meta.encode()).hexdigest()
    assert hashing.google_phone_hash(raw) == hashlib.sha256(google.encode()).hexdigest()


def test_national_number_needs_country_code() -> None:
    with pytest.raises(ValueError, match="country code"):
        hashing.normalize_phone_meta("06 12345678")
    assert hashing.normalize_phone_google("06 12345678", default_country_code="+31") == (
        "+31612345678"
    )


@pytest.mark.parametrize("bad", ["", "abc", "+1 23"])
def test_invalid_phone(bad: str) -> None:
    with pytest.raises(ValueError):
        hashing.normalize_phone_meta(bad)


def test_external_id() -> None:
    assert hashing.external_id_hash(" cust-42 ") == hashlib.sha256(b"cust-42").hexdigest()
