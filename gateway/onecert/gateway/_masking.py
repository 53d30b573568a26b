"""Masking of account display names before a citizen sees them.

Only the citizen's own accounts are ever shown (previous holders' never), so
the mask keeps enough to recognise an account ("zh***ng") and no more. Rules,
on the name without surrounding blanks, counted in characters:

* empty -> empty; one character -> ``***``;
* two characters -> the first + ``***`` ("张三" -> "张***");
* three or four -> the first and the last ("张三丰" -> "张***丰");
* five or more -> the first two and the last two ("zhang" -> "zh***ng");
* an e-mail address masks its local part the same way and keeps only the
  first letter and the top-level label of the domain
  ("zhang.san@example.com" -> "zh***an@e***.com");
* no digit is ever shown: a kept digit becomes ``*``, and a name (or e-mail
  part) without a single letter, such as a phone number "+86 138-0013-8000",
  is ``***`` whole. Kept blanks and invisible controls are starred too.

The masked part is always exactly ``***``, so the mask does not tell the length.
"""

from __future__ import annotations

STARS = "***"
_MAX_TLD = 10


def _shown(ch: str) -> str:
    if ch.isdigit() or ch.isspace() or not ch.isprintable():
        return "*"
    return ch


def _mask_plain(name: str) -> str:
    n = len(name)
    if n == 0:
        return ""
    if n == 1 or not any(ch.isalpha() for ch in name):
        # Nothing to recognise, or only digits and punctuation (a phone number).
        return STARS
    if n == 2:
        keep_head, keep_tail = 1, 0
    elif n <= 4:
        keep_head, keep_tail = 1, 1
    else:
        keep_head, keep_tail = 2, 2
    return _kept(name[:keep_head]) + STARS + (_kept(name[n - keep_tail :]) if keep_tail else "")


def _kept(part: str) -> str:
    # Letters alone (the usual case) are shown as they are.
    return part if part.isalpha() else "".join(_shown(ch) for ch in part)


def _first_letter(text: str) -> str:
    return text[0] if text[0].isalpha() else ""


def _mask_domain(domain: str) -> str:
    label, dot, tld = domain.rpartition(".")
    if dot and label and tld.isascii() and tld.isalpha() and len(tld) <= _MAX_TLD:
        return _first_letter(label) + STARS + "." + tld
    return _first_letter(domain) + STARS


def mask_display_name(name: str) -> str:
    """The name as a citizen may see it: recognisable, never whole, never with digits."""
    name = name.strip()
    if not name:
        return ""
    local, at, domain = name.rpartition("@")
    if at and local and domain:
        return _mask_plain(local) + "@" + _mask_domain(domain)
    return _mask_plain(name)
