"""Phone numbers: parsed and checked with phonenumbers, stored as E.164 digits (no '+')."""

from __future__ import annotations

import phonenumbers


class InvalidPhone(ValueError):
    pass


def normalize(text: str, default_region: str | None = None) -> str:
    """E.164 digits of a valid number, else InvalidPhone with a readable reason."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidPhone("phone number is empty")
    raw = text.strip()
    if len(raw) > 32:
        raise InvalidPhone("phone number is too long")
    if not raw.startswith("+") and default_region is None:
        raw = "+" + raw.lstrip("0") if raw[:1].isdigit() else raw
    try:
        number = phonenumbers.parse(raw, default_region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhone(f"not a phone number: {exc}") from None
    if not phonenumbers.is_valid_number(number):
        raise InvalidPhone("not a valid phone number (use international format, e.g. +14155550123)")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)[1:]
