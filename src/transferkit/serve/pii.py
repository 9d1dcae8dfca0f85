"""Masking of personal data in logged texts: e-mail addresses, phone numbers, ID numbers.

Chinese resident ID numbers (18 digits, the last may be X) and mainland mobile numbers (1[3-9] + 9 digits) are
matched before the card and generic phone patterns, so that each is masked whole and named by its kind.
"""

from __future__ import annotations

import re

_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("EMAIL", re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")),
    # resident ID: 6-digit area, birth date 18xx-20xx, 3 digits, check digit
    ("ID", re.compile(r"(?<!\d)[1-9]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx](?![\dA-Za-z])")),
    ("ID", re.compile(r"(?<!\d)\d{3}-\d{2}-\d{4}(?!\d)")),  # US social security number
    ("PHONE", re.compile(r"(?<!\d)(?:\+?86[ -]?)?1[3-9]\d[ -]?\d{4}[ -]?\d{4}(?!\d)")),
    ("CARD", re.compile(r"(?<!\d)(?:\d[ -]?){13,19}(?<=\d)(?!\d)")),
]
#: other phone numbers: groups of digits with an optional country code and area code in parentheses, at least
#: 7 digits in all (so that dates, times and prices stay)
_PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]\d{2,4}){1,4}(?!\w)")
_DATE = re.compile(r"\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{4}")


def _phone(m: re.Match[str]) -> str:
    s = m.group(0)
    return "[PHONE]" if sum(c.isdigit() for c in s) >= 7 and not _DATE.fullmatch(s) else s


def mask(text: str) -> str:
    """`text` with every e-mail address, ID, card and phone number replaced by [EMAIL], [ID], [CARD], [PHONE]."""
    for kind, pattern in _PATTERNS:
        text = pattern.sub(f"[{kind}]", text)
    return _PHONE.sub(_phone, text)
