"""The portal's words: both languages say the same things, in plain words."""

from __future__ import annotations

import re
import string

from onecert.portal._i18n import _CATALOGUES, translator
from onecert.portal._views import show_number


def placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def test_chinese_and_english_have_the_same_messages_and_placeholders() -> None:
    """Every message exists in both languages with the same fields to fill in."""
    zh, en = _CATALOGUES["zh"], _CATALOGUES["en"]
    assert set(zh) == set(en)
    assert {k: placeholders(v) for k, v in zh.items()} == {
        k: placeholders(v) for k, v in en.items()
    }


def test_no_message_speaks_the_machine_s_language() -> None:
    """No status code or machinery word reaches a citizen."""
    machine = re.compile(r"UNAVAILABLE|DEADLINE|TIMED_OUT|breaker|gRPC|RPC|handle|\bjti\b")
    for language, messages in _CATALOGUES.items():
        for key, text in messages.items():
            assert not machine.search(text), (language, key)


def test_chinese_is_the_default_and_unknown_languages_fall_back_to_it() -> None:
    """Without a choice, or with an unknown one, the page is Chinese."""
    assert translator(None).html_lang == "zh-Hans"
    assert translator("fr").language == "zh"
    assert translator("en")("sign_in") == "Sign in"


def test_numbers_are_shown_with_their_middle_digits_hidden() -> None:
    """Numbers on the page keep the first three and last four digits, as carriers show them."""
    assert show_number("+8613910247756") == "139****7756"
    assert show_number("+447700900123") == "447****0123"
    assert show_number("+12345") == "***45"
