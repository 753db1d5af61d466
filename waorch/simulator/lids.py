"""Every number on the simulated network has a stable LID (`<digits>@lid`), as WhatsApp gives one.

A LID is a fixed permutation of the phone number, so it is stable across restarts and simulators
and costs no memory; the network can always map it back, but an account may only resolve the LIDs
of people it has a conversation with (see `Network.resolve_lid`). Clients must treat it as opaque.
"""

from __future__ import annotations

import re

SUFFIX = "@lid"
_SPACE = 10**15  # phone numbers are at most 15 digits, so this permutes every one of them
_FACTOR = 734_592_611_948_273  # coprime with 10**15: the map is a bijection
_OFFSET = 193_715_392_847_561
_INVERSE = pow(_FACTOR, -1, _SPACE)
_PHONE = re.compile(r"^[1-9]\d{6,14}$")
_LID = re.compile(r"^(\d{1,16})(?:@lid)?$")


def lid_of(phone: str) -> str:
    """The LID (with `@lid`) of an E.164 number given as digits."""
    return f"{(int(phone) * _FACTOR + _OFFSET) % _SPACE + _SPACE}{SUFFIX}"


def phone_of(lid: str) -> str | None:
    """The phone behind a LID (`<digits>` or `<digits>@lid`); None when it is no LID of a number."""
    match = _LID.match(lid)
    if match is None:
        return None
    value = int(match.group(1)) - _SPACE
    if not 0 <= value < _SPACE:
        return None
    phone = str((value - _OFFSET) * _INVERSE % _SPACE)
    return phone if _PHONE.match(phone) else None


def is_lid(address: str) -> bool:
    return address.endswith(SUFFIX)
