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
``PhoneNormaliser`` therefore asks ``phonenumbers`` once per *narrow shape*
(a plus or not, the count of digits, all but the last four digits) and
applies the answer to every later number of that shape; and once a *wide
shape* (all but the last seven digits: one operator code) has had the same
answer for a dozen numbers that differ in its hidden digits, to every number
of it. Strings with anything but
digits and the usual separators always go to ``phonenumbers``. The tests
compare the two paths on many numbers in several regions.
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
#: Shape = (plus sign, digit count, all digits but the last N).
Shape = tuple[bool, int, str]
#: What phonenumbers did to a shape: (leading digits dropped, country code
#: put in front), or the kind of rejection.
Rule = tuple[int, str] | str
_NOT_A_NUMBER = "not-a-number"
_WRONG_LENGTH = "wrong-length"
_REASONS = {
    _NOT_A_NUMBER: "{raw!r} is not a phone number",
    _WRONG_LENGTH: "{raw!r} has the wrong number of digits for a phone number in region"
    " {region} or with its country code",
}
#: A narrow shape keeps all but four digits: phonenumbers' decision never
#: looks that far into a number, so its answer for one number is its answer
#: for the whole shape.
_NARROW_TAIL = 4
#: A wide shape keeps all but seven digits (a Russian number's subscriber
#: part), so one answer covers a whole operator code; it is trusted only
#: after phonenumbers gave the same answer for _TRUST_AFTER numbers of it.
_WIDE_TAIL = 7
_WIDE_MIN_DIGITS = 10
"""Shorter numbers keep too few digits in a wide shape (+30... and +31... are
two countries)."""
_TRUST_AFTER = 12
_SPREAD = 4
_MAX_SHAPES = 500_000


class _Wide:
    """A wide shape's rule and the evidence for it.

    Trusted once phonenumbers gave the same answer for _TRUST_AFTER numbers
    whose first two hidden digits took at least _SPREAD values each: agreement
    of numbers that differ only in their last digits proves nothing.
    """

    __slots__ = ("agreed", "firsts", "rule", "seconds")

    def __init__(self, rule: Rule) -> None:
        self.rule: Rule | None = rule
        self.agreed = 0
        self.firsts: set[str] = set()
        self.seconds: set[str] = set()

    @property
    def trusted(self) -> bool:
        return (
            self.rule is not None
            and self.agreed >= _TRUST_AFTER
            and len(self.firsts) >= _SPREAD
            and len(self.seconds) >= _SPREAD
        )

    def agree(self, rule: Rule, hidden: str) -> None:
        if rule != self.rule:
            self.rule = None  # numbers of this shape differ: never trust it
            return
        self.agreed += 1
        self.firsts.add(hidden[0])
        self.seconds.add(hidden[1])


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
        self._country = str(phonenumbers.country_code_for_region(default_region))
        self._narrow: dict[Shape, Rule] = {}
        self._wide: dict[Shape, _Wide] = {}

    def normalise(self, raw: str) -> str | Rejected:
        """E.164 digits without the plus, or ``Rejected`` with the reason."""
        compact = raw.strip().translate(_SEPARATORS)
        plus = compact.startswith("+")
        digits = compact[1:] if plus else compact
        if not (digits.isascii() and digits.isdigit() and len(digits) > _NARROW_TAIL + 1):
            return self._apply(raw, digits, self._parse(raw, None))
        wide = None
        if len(digits) >= _WIDE_MIN_DIGITS:
            wide = (plus, len(digits), digits[:-_WIDE_TAIL])
        seen = self._wide.get(wide) if wide is not None else None
        if seen is not None and seen.trusted:
            return self._apply(raw, digits, seen.rule)
        narrow = (plus, len(digits), digits[:-_NARROW_TAIL])
        rule = self._narrow.get(narrow)
        if rule is None:
            rule = self._parse(raw, digits)
            if rule is not None:
                if len(self._narrow) >= _MAX_SHAPES:
                    self._narrow.clear()
                self._narrow[narrow] = rule
        if wide is not None and rule is not None and self._widens(rule, wide):
            if seen is None:
                if len(self._wide) >= _MAX_SHAPES:
                    self._wide.clear()
                seen = self._wide[wide] = _Wide(rule)
            seen.agree(rule, digits[-_WIDE_TAIL:])
        return self._apply(raw, digits, rule)

    def _widens(self, rule: Rule, wide: Shape) -> bool:
        """Whether ``rule`` may stand for a wide shape: a number of the default
        region whose first three national digits (the area or operator code)
        are inside the shape. International forms (00..., 810...) are not: the
        digit after their country code may be a trunk prefix that changes
        everything."""
        if not isinstance(rule, tuple):
            return False
        drop, country = rule
        return country == self._country and len(wide[2]) - drop >= 3

    def _apply(self, raw: str, digits: str, rule: Rule | None) -> str | Rejected:
        if rule is None:  # phonenumbers changed digits, not only dropped them
            return self._slow(raw)
        if isinstance(rule, str):
            return Rejected(_REASONS[rule].format(raw=raw.strip(), region=self.region))
        drop, country = rule
        return country + digits[drop:]

    def _slow(self, raw: str) -> str | Rejected:
        number = self._number(raw)
        if isinstance(number, str):
            return Rejected(_REASONS[number].format(raw=raw.strip(), region=self.region))
        return str(number.country_code) + phonenumbers.national_significant_number(number)

    def _number(self, raw: str) -> phonenumbers.PhoneNumber | str:
        """phonenumbers' reading of ``raw``, or the kind of rejection."""
        try:
            number = phonenumbers.parse(raw, self.region)
        except phonenumbers.NumberParseException:
            return _NOT_A_NUMBER
        # IS_POSSIBLE_LOCAL_ONLY (a number without its area code) is not enough:
        # the same seven digits exist in every city.
        possible = phonenumbers.is_possible_number_with_reason(number)
        if possible != phonenumbers.ValidationResult.IS_POSSIBLE:
            return _WRONG_LENGTH
        return number

    def _parse(self, raw: str, digits: str | None) -> Rule | None:
        """The rule phonenumbers applies to ``raw``; None when it is not a plain drop."""
        number = self._number(raw)
        if isinstance(number, str):
            return number
        national = phonenumbers.national_significant_number(number)
        if digits is None or not digits.endswith(national):
            return None
        return (len(digits) - len(national), str(number.country_code))


def e164(digits: str) -> str:
    """The printable E.164 form of stored digits."""
    return "+" + digits
