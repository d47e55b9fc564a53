"""Caller-ID normalisation, shared by the inventory import and the lookup.

Billing writes ``8 (916) 123-45-67`` while the trunk presents
``+79161234567``; both must become the same key. The ``phonenumbers``
library decides what a string means in the configured default region. The
result is the E.164 number *without* the plus (``79161234567``), which is how
numbers are stored in Redis.

Parsing costs ``phonenumbers`` about 35 µs a number, too slow for importing a
million subscribers in seconds. Its decision for a string of plain digits
(strip a national or international prefix, add a country code, or reject)
depends on the digits' count and their leading digits, not on the last few.
``PhoneNormaliser`` therefore asks ``phonenumbers`` once per *shape* (a plus
or not, the count of digits, all but the last four digits) and applies the
answer to every later number of that shape. Strings with anything but digits
and the usual separators always go to ``phonenumbers``. The tests compare the
two paths on many numbers in several regions.
"""

from __future__ import annotations

from dataclasses import dataclass

import phonenumbers

#: Separators that carry no meaning in a phone number.
_SEPARATORS = str.maketrans("", "", " -().\t\u00a0/")
#: What switches and trunks present when the caller hides the number.
WITHHELD = frozenset(
    {"", "anonymous", "unknown", "unavailable", "restricted", "private", "withheld", "none"}
)
_SHAPE_TAIL = 4
_MAX_SHAPES = 500_000


@dataclass(frozen=True, slots=True)
class Rejected:
    """A string that is not a phone number, with the reason in plain words."""

    reason: str


def valid_region(region: str) -> bool:
    return region in phonenumbers.SUPPORTED_REGIONS


def is_withheld(caller_id: str | None) -> bool:
    """True for an empty, anonymous or otherwise hidden caller ID."""
    return caller_id is None or caller_id.strip().strip("<>\"'").lower() in WITHHELD


class PhoneNormaliser:
    """Turns phone numbers as people and trunks write them into E.164 digits."""

    def __init__(self, default_region: str = "RU") -> None:
        if not valid_region(default_region):
            raise ValueError(
                f"unknown region {default_region!r}: use a two-letter ISO code such as RU"
            )
        self.region = default_region
        # shape -> (digits to drop from the front, country code) or a rejection
        self._shapes: dict[tuple[bool, int, str], tuple[int, str] | Rejected] = {}

    def normalise(self, raw: str) -> str | Rejected:
        """E.164 digits without the plus, or ``Rejected`` with the reason."""
        compact = raw.strip().translate(_SEPARATORS)
        plus = compact.startswith("+")
        digits = compact[1:] if plus else compact
        shape: tuple[bool, int, str] | None = None
        if digits.isascii() and digits.isdigit() and len(digits) > _SHAPE_TAIL + 1:
            shape = (plus, len(digits), digits[:-_SHAPE_TAIL])
            rule = self._shapes.get(shape)
            if rule is not None:
                if isinstance(rule, Rejected):
                    return rule
                drop, country = rule
                return country + digits[drop:]
        result, rule = self._parse(raw, digits if shape else None)
        if shape is not None and rule is not None:
            if len(self._shapes) >= _MAX_SHAPES:
                self._shapes.clear()
            self._shapes[shape] = rule
        return result

    def _parse(
        self, raw: str, digits: str | None
    ) -> tuple[str | Rejected, tuple[int, str] | Rejected | None]:
        try:
            number = phonenumbers.parse(raw, self.region)
        except phonenumbers.NumberParseException:
            rejected = Rejected(f"{raw.strip()!r} is not a phone number")
            return rejected, rejected
        # IS_POSSIBLE_LOCAL_ONLY (a number without its area code) is not enough:
        # the same seven digits exist in every city.
        possible = phonenumbers.is_possible_number_with_reason(number)
        if possible != phonenumbers.ValidationResult.IS_POSSIBLE:
            rejected = Rejected(
                f"{raw.strip()!r} has the wrong number of digits for a phone number"
                f" in region {self.region} or with its country code"
            )
            return rejected, rejected
        country = str(number.country_code)
        national = phonenumbers.national_significant_number(number)
        rule: tuple[int, str] | None = None
        if digits is not None and digits.endswith(national):
            rule = (len(digits) - len(national), country)
        return country + national, rule


def e164(digits: str) -> str:
    """The printable E.164 form of stored digits."""
    return "+" + digits
