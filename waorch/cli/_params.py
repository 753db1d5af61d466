"""Parameter types shared by the commands."""

from __future__ import annotations

import click

from waorch.core.phones import InvalidPhone, normalize


class PhoneNumber(click.ParamType):
    """A phone number in international format, given on as E.164 digits; a usage error otherwise."""

    name = "phone"

    def convert(self, value, param, ctx) -> str:
        try:
            return normalize(value)
        except InvalidPhone as exc:
            self.fail(str(exc), param, ctx)


PHONE = PhoneNumber()
