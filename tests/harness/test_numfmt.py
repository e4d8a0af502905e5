"""One way to write each kind of figure, and no rounding into a value a figure does not have."""

from __future__ import annotations

import pytest

from harness import numfmt


@pytest.mark.parametrize("kind, value, shown", [
    ("count", 1500, "1,500"),
    ("rate", 2645.3, "2,645"),  # rates: whole numbers with separators
    ("rate", 71.4, "71"),
    ("rate", 3.16, "3.16"),  # a slow rate keeps 3 digits rather than read 3
    ("rate", 0.32, "0.320"),
    ("time", 3.065, "3.06"),  # times: 3 significant digits
    ("time", 22, "22.0"),
    ("time", 0.013, "0.0130"),
    ("time", 297.2, "297"),
    ("time", 3164, "3,164"),  # never fewer digits than the whole number
    ("time", 9.996, "10.0"),  # a carry into a new digit keeps 3 digits
    ("time", 0, "0"),
    ("ratio", 1.916, "1.92×"),
    ("ratio", 51, "51.00×"),
    ("percent", 0.16, "16.0%"),
    ("percent", 1.0, "100.0%"),
    ("size", 61.4, "61"),
    ("cores", 0.154, "0.15"),
    ("cpu_seconds", 0.07, "0.07"),
    ("time", None, "–"),
])
def test_each_kind_has_one_format(kind: str, value: float | None, shown: str) -> None:
    assert numfmt.figure(value, kind) == shown


@pytest.mark.parametrize("kind, value, shown", [
    ("percent", 0.99996, "99.996%"),  # not "100.0%" beside a "> 99.99%" bar
    ("percent", 0.00004, "0.004%"),  # not "0.0%" for a failure that happened
    ("ratio", 0.0018, "0.002×"),
    ("percent", 0.0, "0.0%"),  # a real zero stays short
])
def test_a_figure_is_never_rounded_to_zero_or_to_a_whole(kind: str, value: float,
                                                         shown: str) -> None:
    assert numfmt.figure(value, kind) == shown
