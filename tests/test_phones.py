"""Phone numbers as billing writes them and as trunks present them."""

from __future__ import annotations

import random

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from announcer.phones import PhoneNormaliser, Rejected, is_withheld


def reference(raw: str, region: str) -> str | None:
    """What phonenumbers alone says, without announcer's shape cache."""
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return None
    possible = phonenumbers.is_possible_number_with_reason(number)
    if possible != phonenumbers.ValidationResult.IS_POSSIBLE:
        return None
    return str(number.country_code) + phonenumbers.national_significant_number(number)


@pytest.mark.parametrize(
    "raw",
    [
        "+7 (999) 123-45-67",
        "+7 999 123 45 67",
        "79991234567",
        "89991234567",
        "9991234567",
        "8 (999) 123-45-67",
        "8-999-123-45-67",
        "+7(999)1234567",
        " 8 999 123 45 67 ",
        "8\u00a0999\u00a0123\u00a045\u00a067",
        "+7 999 123-45-67 доб. 12",
    ],
)
def test_every_format_of_one_number_is_one_subscriber(raw: str) -> None:
    assert PhoneNormaliser("RU").normalise(raw) == "79991234567"


def test_billing_and_trunk_forms_of_scenario_9_match() -> None:
    n = PhoneNormaliser("RU")
    assert n.normalise("8 (916) 123-45-67") == n.normalise("+79161234567") == "79161234567"


def test_moscow_landline_in_all_forms() -> None:
    n = PhoneNormaliser("RU")
    forms = ("+7 495 123-45-67", "84951234567", "74951234567", "4951234567")
    assert {n.normalise(f) for f in forms} == {"74951234567"}


def test_foreign_numbers_keep_their_country() -> None:
    n = PhoneNormaliser("RU")
    assert n.normalise("+44 20 7946 0958") == "442079460958"
    assert n.normalise("810 44 20 7946 0958") == "442079460958"  # Russian international prefix


def test_other_default_region() -> None:
    n = PhoneNormaliser("BY")
    assert n.normalise("8 029 123-45-67") == "375291234567"
    assert n.normalise("+375 29 123-45-67") == "375291234567"


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ("12", "wrong number of digits"),
        ("123456789012345678", "is not a phone number"),
        ("1234567", "wrong number of digits"),
        ("not a number", "is not a phone number"),
        ("", "is not a phone number"),
        ("8 (999) 123-45", "wrong number of digits"),
    ],
)
def test_what_is_not_a_number_is_rejected_with_a_reason(raw: str, words: str) -> None:
    result = PhoneNormaliser("RU").normalise(raw)
    assert isinstance(result, Rejected)
    assert words in result.reason


def test_rejection_is_remembered_per_shape_and_still_correct() -> None:
    n = PhoneNormaliser("RU")
    first = n.normalise("1234567")
    again = n.normalise("1239999")
    assert isinstance(first, Rejected)
    assert isinstance(again, Rejected)
    assert reference("1239999", "RU") is None


@pytest.mark.parametrize(
    "caller_id", [None, "", "anonymous", "Anonymous", "unknown", "<unknown>", "Restricted"]
)
def test_withheld_caller_ids(caller_id: str | None) -> None:
    assert is_withheld(caller_id)


def test_a_number_is_not_withheld() -> None:
    assert not is_withheld("+79161234567")


def test_unknown_region_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown region 'XX'"):
        PhoneNormaliser("XX")


REGIONS = ("RU", "BY", "KZ", "UA", "US", "DE", "GB", "FR", "IT", "AR")
FORMATS = (
    "{d}",
    "+{d}",
    "8{d}",
    "7{d}",
    "0{d}",
    "00{d}",
    "810{d}",
    "+7 ({a}) {b}",
)


@settings(max_examples=400, deadline=None)
@given(
    region=st.sampled_from(REGIONS),
    form=st.sampled_from(FORMATS),
    digits=st.text(alphabet="0123456789", min_size=6, max_size=13),
    tails=st.lists(st.integers(0, 9999), min_size=1, max_size=8),
)
def test_shape_cache_agrees_with_phonenumbers(
    region: str, form: str, digits: str, tails: list[int]
) -> None:
    """Numbers that share all but the last four digits share phonenumbers' verdict."""
    normaliser = PhoneNormaliser(region)
    for tail in tails:
        full = digits[:-4] + f"{tail:04d}"
        raw = form.format(d=full, a=full[:3], b=full[3:])
        got = normaliser.normalise(raw)
        expected = reference(raw, region)
        assert (None if isinstance(got, Rejected) else got) == expected, raw


@settings(max_examples=300, deadline=None)
@given(
    region=st.sampled_from(REGIONS),
    form=st.sampled_from(FORMATS),
    digits=st.text(alphabet="0123456789", min_size=8, max_size=13),
    tails=st.lists(st.integers(0, 9_999_999), min_size=9, max_size=30),
)
def test_wide_shapes_agree_with_phonenumbers(
    region: str, form: str, digits: str, tails: list[int]
) -> None:
    """Enough numbers of one operator code to trust the wide shape; all still right."""
    normaliser = PhoneNormaliser(region)
    for tail in tails:
        full = digits[:-7] + f"{tail:07d}"
        raw = form.format(d=full, a=full[:3], b=full[3:])
        got = normaliser.normalise(raw)
        assert (None if isinstance(got, Rejected) else got) == reference(raw, region), raw


def test_a_remembered_rejection_names_the_number_it_is_about() -> None:
    n = PhoneNormaliser("RU")
    n.normalise("1234567")
    again = n.normalise("1239999")
    assert isinstance(again, Rejected)
    assert again.reason.startswith("'1239999' has the wrong number of digits")


def test_shape_cache_agrees_on_a_realistic_city() -> None:
    """Ten thousand Russian numbers in billing's formats, each checked by phonenumbers."""
    rng = random.Random(5)
    normaliser = PhoneNormaliser("RU")
    prefixes = ("916", "926", "903", "985", "999", "495", "499", "812", "343", "700")
    for _ in range(10_000):
        national = rng.choice(prefixes) + f"{rng.randrange(10**7):07d}"
        raw = rng.choice(("8", "7", "+7", "", "+7 ")) + national
        got = normaliser.normalise(raw)
        assert (None if isinstance(got, Rejected) else got) == reference(raw, "RU"), raw


def test_operator_codes_in_twenty_regions_and_every_form() -> None:
    """Forty numbers per operator code: enough for wide shapes to be trusted."""
    rng = random.Random(11)
    regions = (*REGIONS, "BR", "MX", "CN", "IN", "JP", "NL", "PL", "TR", "ES", "AU")
    for _ in range(300):
        region, form = rng.choice(regions), rng.choice(FORMATS)
        normaliser = PhoneNormaliser(region)
        head = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 6)))
        for _ in range(40):
            full = head + f"{rng.randrange(10**7):07d}"
            raw = form.format(d=full, a=full[:3], b=full[3:])
            got = normaliser.normalise(raw)
            assert (None if isinstance(got, Rejected) else got) == reference(raw, region), raw
