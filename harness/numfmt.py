"""How report.md, the charts and the progress line write a number: one rule per kind.

One module so two tables never write one figure two ways:

============  ============================================  ===================
kind          rule                                          examples
============  ============================================  ===================
count         whole, thousands separators                   ``1,500``
rate          whole, separators; under 10: 3 significant    ``2,645`` ``16`` ``3.16``
time          3 significant digits, never fewer than the    ``0.0130`` ``3.07``
              whole number (ms, s, µs alike)                ``22.0`` ``297`` ``3,164``
ratio         two decimals and ×                            ``1.92×`` ``51.00×``
percent       one decimal and %                             ``16.0%`` ``99.9%``
size          whole MB, separators                          ``68``
cores         two decimals                                  ``0.16``
cpu seconds   two decimals: the CPU clocks tick in 10 ms    ``0.34`` ``4.84``
============  ============================================  ===================

No figure is rounded into a value it does not have: a non-zero ratio or
percentage is never shown as ``0.00×``/``0.0%``, nor one short of 1 as
``100.0%`` (more decimals are used until it is not), so a success of 99.996 %
read against ``> 99.99%`` is shown as ``99.996%``, not ``100.0%``.  A time keeps
its whole digits (``3,164``, not ``3,160``): rounding a whole number to three
digits would print zeros that were never measured.  A missing figure is ``–``.
"""

from __future__ import annotations

import math

MISSING = "–"
_MAX_EXTRA_DECIMALS = 4


def _sig(value: float, digits: int = 3) -> str:
    """``digits`` significant digits, or the whole number when it has more digits."""
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    decimals = digits - 1 - magnitude
    if decimals <= 0:
        return f"{value:,.0f}"
    text = f"{value:,.{decimals}f}"
    # Rounding can carry into a new digit (9.996 → "10.00"): one decimal fewer then.
    if len(text.replace("-", "").replace(",", "").replace(".", "").lstrip("0")) > digits:
        text = f"{value:,.{max(0, decimals - 1)}f}"
    return text


def _honest(value: float, decimals: int, scale: float, suffix: str) -> str:
    """``value × scale`` with ``decimals``, more when they would show 0 or a false 1."""
    shown = value * scale
    for extra in range(_MAX_EXTRA_DECIMALS + 1):
        text = f"{shown:,.{decimals + extra}f}"
        rounded = float(text.replace(",", ""))
        false_zero = rounded == 0 and shown != 0
        false_whole = scale == 100 and rounded == 100 and shown < 100
        if not (false_zero or false_whole):
            return text + suffix
    return text + suffix


def count(value: int | float | None) -> str:
    return MISSING if value is None else f"{round(value):,}"


def rate(value: float | None) -> str:
    """Requests or points per second: whole numbers; a slow rate keeps 3 digits."""
    if value is None:
        return MISSING
    return _sig(value) if abs(value) < 10 else f"{value:,.0f}"


def time(value: float | None) -> str:
    """A duration in whatever unit the column names (ms, s, µs)."""
    return MISSING if value is None else _sig(value)


def ratio(value: float | None) -> str:
    return MISSING if value is None else _honest(value, 2, 1, "×")


def percent(fraction: float | None) -> str:
    """A fraction (0.16) as a percentage (16.0%)."""
    return MISSING if fraction is None else _honest(fraction, 1, 100, "%")


def size(megabytes: float | None) -> str:
    return MISSING if megabytes is None else f"{megabytes:,.0f}"


def cores(value: float | None) -> str:
    return MISSING if value is None else _honest(value, 2, 1, "")


def cpu_seconds(value: float | None) -> str:
    """CPU time read from the clocks (10 ms ticks): more digits would be noise."""
    return MISSING if value is None else f"{value:,.2f}"


KINDS = {"count": count, "rate": rate, "time": time, "ratio": ratio, "percent": percent,
         "size": size, "cores": cores, "cpu_seconds": cpu_seconds}


def figure(value: float | None, kind: str) -> str:
    """``value`` written as its kind is (a key of ``KINDS``)."""
    return KINDS[kind](value)
