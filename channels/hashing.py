"""Identifier normalisation and SHA-256 exactly as the ad platforms document it.

Only these hashes ever leave parcours for an ad platform. The rules differ by platform and a
hash of a differently normalised value simply never matches, so each platform gets its own
function instead of one "close enough" normaliser:

* Meta (Customer File Custom Audiences): email trimmed and lower-cased; phone as digits
  only, country code included, no ``+`` and no leading zeros; external ids trimmed.
* Google (Data Manager API, "Format user data"): email with all whitespace removed and
  lower-cased, and for ``gmail.com``/``googlemail.com`` the dots before ``@`` removed and a
  ``+suffix`` dropped; phone in E.164 *with* the ``+``.

Hashes are lower-case hex (Meta requires it; Google accepts HEX when ``encoding`` is HEX).
"""

from __future__ import annotations

import hashlib
import re

_GOOGLE_MAIL_DOMAINS = frozenset({"gmail.com", "googlemail.com"})
_WHITESPACE = re.compile(r"\s+")
_NON_DIGITS = re.compile(r"\D+")


def sha256_hex(value: str) -> str:
    """SHA-256 of the UTF-8 bytes, lower-case hex."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def normalize_email_meta(email: str) -> str:
    """Meta: trim leading/trailing whitespace, lower-case."""
    return email.strip().lower()


def normalize_email_google(email: str) -> str:
    """Google Data Manager: remove all whitespace, lower-case, Gmail canonical form."""
    value = _WHITESPACE.sub("", email).lower()
    local, sep, domain = value.rpartition("@")
    if sep and domain in _GOOGLE_MAIL_DOMAINS:
        local = local.split("+", 1)[0].replace(".", "")
        value = f"{local}@{domain}"
    return value


def _phone_digits(phone: str, default_country_code: str | None) -> str:
    raw = phone.strip()
    if raw.startswith("00"):
        raw = "+" + raw[2:]
    digits = _NON_DIGITS.sub("", raw)
    if not digits:
        raise ValueError(f"phone number has no digits: {phone!r}")
    if not raw.startswith("+"):
        if default_country_code is None:
            raise ValueError(
                f"phone number {phone!r} has no country code; store it in E.164 (+31...) or "
                "configure default_country_code"
            )
        cc = _NON_DIGITS.sub("", default_country_code)
        digits = cc + digits.lstrip("0")
    if len(digits) < 8 or len(digits) > 15:
        raise ValueError(f"phone number {phone!r} is not a valid E.164 number")
    return digits


def normalize_phone_meta(phone: str, default_country_code: str | None = None) -> str:
    """Meta: digits only, including the country code, no ``+``, no leading zeros."""
    return _phone_digits(phone, default_country_code)


def normalize_phone_google(phone: str, default_country_code: str | None = None) -> str:
    """Google: E.164 with the leading ``+`` and the country code."""
    return "+" + _phone_digits(phone, default_country_code)


def normalize_external_id(external_id: str) -> str:
    """External ids are matched as given; only surrounding whitespace is removed."""
    return external_id.strip()


def meta_email_hash(email: str) -> str:
    return sha256_hex(normalize_email_meta(email))


def meta_phone_hash(phone: str, default_country_code: str | None = None) -> str:
    return sha256_hex(normalize_phone_meta(phone, default_country_code))


def external_id_hash(external_id: str) -> str:
    return sha256_hex(normalize_external_id(external_id))


def google_email_hash(email: str) -> str:
    return sha256_hex(normalize_email_google(email))


def google_phone_hash(phone: str, default_country_code: str | None = None) -> str:
    return sha256_hex(normalize_phone_google(phone, default_country_code))
