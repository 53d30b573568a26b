"""Phone numbers as user tables hold them: reading them as E.164, and the formats generated."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from onecert.adapters.sql import normalize_phone, phone_variants
from onecert.sdk._msisdn import is_e164

E164 = st.from_regex(r"\+[1-9][0-9]{7,14}", fullmatch=True)
CN_MOBILE = st.from_regex(r"\+861[3-9][0-9]{9}", fullmatch=True)
COUNTRIES = st.sampled_from(["86", "1", "44", "7", "852", "49", "91"])
ANYTHING = st.one_of(
    st.text(max_size=80),
    st.text(
        alphabet="+0123456789 -.()/\uff10\uff11\uff12\uff13\uff18\uff19\uff0b\u3000", max_size=30
    ),
    st.integers(),
    st.none(),
    st.booleans(),
    st.floats(),
    st.binary(max_size=20),
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+8613800138000", "+8613800138000"),
        ("8613800138000", "+8613800138000"),
        ("008613800138000", "+8613800138000"),
        ("0086 138 0013 8000", "+8613800138000"),
        ("13800138000", "+8613800138000"),
        ("138-0013-8000", "+8613800138000"),
        ("138 0013 8000", "+8613800138000"),
        ("+86 138 0013 8000", "+8613800138000"),
        ("+86-138-0013-8000", "+8613800138000"),
        ("(+86) 138.0013.8000", "+8613800138000"),
        ("  13800138000 ", "+8613800138000"),
        # Full-width digits, and a full-width plus sign and spaces.
        ("\uff11\uff13\uff18\uff10\uff10\uff11\uff13\uff18\uff10\uff10\uff10", "+8613800138000"),
        (
            "\uff0b\uff18\uff16\u3000\uff11\uff13\uff18\u3000"
            "\uff10\uff10\uff11\uff13\u3000\uff18\uff10\uff10\uff10",
            "+8613800138000",
        ),
        (13800138000, "+8613800138000"),
        (8613800138000, "+8613800138000"),
        ("013800138000", "+8613800138000"),
        ("010-1234-5678", "+861012345678"),
        ("+1 (415) 555-0100", "+14155550100"),
        ("0014155550100", "+14155550100"),
    ],
)
def test_stored_formats_read_as_e164(raw: object, expected: str) -> None:
    """Each format a real users table holds a Chinese or foreign number in reads as its E.164."""
    assert normalize_phone(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        None,
        True,
        1.5,
        "abc",
        "138OO138000",
        "+86 138 0013 800x",
        "++8613800138000",
        "86+13800138000",
        "+0086138",
        "12345",
        "1380013800",  # ten digits: no Chinese mobile
        "23800138000",  # eleven digits, not a mobile, not an area code + number
        "+861380013800012345",  # longer than E.164 allows
        "tel:+8613800138000",
        "+86 138 0013 8000 ext 12",
        "1" * 200,
    ],
)
def test_not_a_number_is_none(raw: object) -> None:
    """Values that are not a phone number, or not certainly one, read as None."""
    assert normalize_phone(raw) is None


def test_default_country_decides_national_numbers() -> None:
    """A number written without a country code belongs to the configured country."""
    assert normalize_phone("07911 123456", default_country="44") == "+447911123456"
    assert normalize_phone("7911123456", default_country="44") == "+447911123456"
    assert normalize_phone("+8613800138000", default_country="44") == "+8613800138000"
    # Under 86 the same digits are a Chinese landline (area code 791) unless
    # written with the international prefix.
    assert normalize_phone("07911 123456") == "+867911123456"
    assert normalize_phone("0044 7911 123456") == "+447911123456"


@pytest.mark.parametrize("bad", ["", "0", "8", "086", "1234", "x"])
def test_bad_default_country_is_refused(bad: str) -> None:
    """A default country that is no E.164 country code is a programming error."""
    with pytest.raises(ValueError, match="country code"):
        normalize_phone("13800138000", default_country=bad)
    with pytest.raises(ValueError, match="country code"):
        phone_variants("+8613800138000", default_country=bad)


def test_chinese_mobile_variants_are_exactly_the_documented_ones() -> None:
    """For a Chinese mobile the eleven documented formats are generated, E.164 first."""
    assert phone_variants("+8613800138000") == (
        "+8613800138000",
        "8613800138000",
        "008613800138000",
        "13800138000",
        "+86 13800138000",
        "+86-13800138000",
        "138 0013 8000",
        "138-0013-8000",
        "+86 138 0013 8000",
        "+86-138-0013-8000",
        "0086 138 0013 8000",
    )


def test_landline_and_foreign_variants() -> None:
    """A Chinese landline gets its trunk-0 form; a foreign number only international forms."""
    assert phone_variants("+861012345678") == (
        "+861012345678",
        "861012345678",
        "00861012345678",
        "1012345678",
        "01012345678",
        "+86 1012345678",
        "+86-1012345678",
    )
    assert phone_variants("+14155550100") == (
        "+14155550100",
        "0014155550100",
        "+1 4155550100",
        "+1-4155550100",
    )


@pytest.mark.parametrize("bad", ["", "8613800138000", "+86 138 0013 8000", "' OR 1=1 --"])
def test_variants_need_e164(bad: str) -> None:
    """Variants are generated only for a validated E.164 number."""
    with pytest.raises(ValueError, match=r"E\.164"):
        phone_variants(bad)


@given(raw=ANYTHING, country=COUNTRIES)
def test_never_crashes_and_answers_e164_or_none(raw: object, country: str) -> None:
    """Whatever a column holds, normalization answers E.164 or None, never an exception."""
    result = normalize_phone(raw, default_country=country)
    assert result is None or is_e164(result)


@given(number=E164, country=COUNTRIES)
def test_idempotent_on_e164(number: str, country: str) -> None:
    """An E.164 number reads as itself, under any default country."""
    assert normalize_phone(number, default_country=country) == number


@given(raw=ANYTHING, country=COUNTRIES)
def test_normalizing_twice_changes_nothing(raw: object, country: str) -> None:
    """Normalizing a normalized number gives it back."""
    once = normalize_phone(raw, default_country=country)
    if once is not None:
        assert normalize_phone(once, default_country=country) == once


@given(number=st.one_of(E164, CN_MOBILE), country=COUNTRIES)
def test_every_variant_reads_back_as_the_number(number: str, country: str) -> None:
    """Every generated format normalizes back to the number it was generated from."""
    variants = phone_variants(number, default_country=country)
    assert variants[0] == number
    assert len(set(variants)) == len(variants)
    for variant in variants:
        assert normalize_phone(variant, default_country=country) == number


@given(number=CN_MOBILE)
def test_every_chinese_mobile_gets_all_eleven_formats(number: str) -> None:
    """No Chinese mobile loses a documented format to ambiguity."""
    assert len(phone_variants(number)) == 11
