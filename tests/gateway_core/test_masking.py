"""Display-name masking: recognisable, never whole, never a digit."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onecert.gateway._masking import _kept, _shown, mask_display_name


@pytest.mark.parametrize(
    ("name", "masked"),
    [
        ("", ""),
        ("   ", ""),
        ("z", "***"),
        ("zh", "z***"),
        ("zha", "z***a"),
        ("john", "j***n"),
        ("zhang", "zh***ng"),
        ("  zhang  ", "zh***ng"),
        ("Zhang San", "Zh***an"),
        ("张", "***"),
        ("张三", "张***"),
        ("张三丰", "张***丰"),
        ("欧阳娜娜娜", "欧阳***娜娜"),
        ("zhang.san@example.com", "zh***an@e***.com"),
        ("a@b.cc", "***@b***.cc"),
        ("13800138000@163.com", "***@***.com"),
        ("lucky7", "lu***y*"),
        ("user2019", "us*****"),
    ],
)
def test_examples(name: str, masked: str) -> None:
    """Names are masked by length; e-mail addresses part by part; digits never kept."""
    assert mask_display_name(name) == masked


@pytest.mark.parametrize(
    "name",
    [
        "13800138000",
        "+86 138-0013-8000",
        "(010) 6552-9988",
        "+8613800138000",
        "".join(chr(0xFF10 + int(d)) for d in "13800138000"),  # fullwidth digits
    ],
)
def test_phone_number_names_are_masked_whole(name: str) -> None:
    """A display name that is itself a phone number shows nothing of it."""
    assert mask_display_name(name) == "***"


def test_invisible_characters_are_not_kept() -> None:
    """Kept characters that are controls or bidi overrides are starred, so the mask cannot spoof."""
    assert mask_display_name("\u202eabcdef") == "*a***ef"
    assert mask_display_name("ab\x00") == "a****"


_NAMES = st.text(alphabet=st.characters(exclude_characters="*"), max_size=40)
_DIGITY = st.text(alphabet=st.sampled_from("0123456789 +-().@abcxyz张"), max_size=30)


@settings(max_examples=300)
@given(_NAMES | _DIGITY)
def test_never_the_full_name(name: str) -> None:
    """For any name of two or more characters the mask neither equals nor contains it."""
    masked = mask_display_name(name)
    stripped = name.strip()
    if len(stripped) >= 2:
        assert masked != stripped
        assert stripped not in masked


@settings(max_examples=300)
@given(_NAMES | _DIGITY | st.from_regex(r"[a-z]{0,6}\+?[0-9 \-]{8,20}[a-z]{0,6}", fullmatch=True))
def test_never_shows_digits(name: str) -> None:
    """The mask never shows a digit, so it never carries a run of four original digits."""
    masked = mask_display_name(name)
    assert not any(ch.isdigit() for ch in masked)
    assert re.search(r"\d{4}", masked) is None


@settings(max_examples=200)
@given(_NAMES)
def test_mask_is_short_and_starred(name: str) -> None:
    """A non-empty mask always contains the stars and stays short whatever the name's length."""
    masked = mask_display_name(name)
    if name.strip():
        assert "***" in masked
        assert len(masked) <= 2 + 3 + 2 + 1 + 1 + 3 + 1 + 10
    else:
        assert masked == ""


@settings(max_examples=300)
@given(_NAMES | _DIGITY | st.text(max_size=6))
def test_kept_characters_are_starred_one_by_one(name: str) -> None:
    """A kept run of letters is shown whole only when every character would be shown
    on its own: the letters-only shortcut never keeps what the per-character rule
    would star."""
    assert _kept(name) == "".join(_shown(ch) for ch in name)
    assert len(_kept(name)) == len(name)
