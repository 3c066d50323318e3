"""Ids given as text (a path segment, a form field, a command-line argument)."""

from __future__ import annotations

MAX_ID_DIGITS = 18  # every such id fits a signed 64-bit integer (BIGINT)


def parse_id(text: str) -> int | None:
    """``text`` as an id: 1 to 18 ASCII digits and nothing else; None otherwise.

    No sign, no spaces and no digits of other scripts: ``"١"`` (Arabic-Indic one), ``"²"``
    and ``" 1"`` are not ids, although ``str.isdigit`` and ``int`` accept some of them.
    """
    if 1 <= len(text) <= MAX_ID_DIGITS and text.isascii() and text.isdigit():
        return int(text)
    return None
