"""Tests for openmps.ids: an id given as text is 1 to 18 ASCII digits, nothing else."""

from __future__ import annotations

import pytest

from openmps.ids import parse_id


@pytest.mark.parametrize(
    ("text", "number"), [("1", 1), ("007", 7), ("9" * 18, 10**18 - 1), ("42", 42)]
)
def test_parse_id_reads_ascii_digits(text: str, number: int) -> None:
    assert parse_id(text) == number


@pytest.mark.parametrize(
    "text",
    ["", " 1", "1 ", "+1", "-1", "1.0", "\u0661", "\u00b9", "\uff11", "1" * 19, "0x1"],
    ids=[
        "empty",
        "leading-space",
        "trailing-space",
        "plus",
        "minus",
        "decimal-point",
        "arabic-indic-one",
        "superscript-one",
        "fullwidth-one",
        "19-digits",
        "hex",
    ],
)
def test_parse_id_refuses_everything_else(text: str) -> None:
    assert parse_id(text) is None
