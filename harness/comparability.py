"""Whether two saved runs can be compared by percentage: ``run.py report A B`` asks first.

A percentage between two runs is read as "the code got faster or slower".  It
only means that when everything else was the same, so before any percentage
the two ``summary.json`` files are compared on what decides the figures:

* **scenario** (its name), **scale**, **seed** and **paths**: a different load.
  A run at ``--scale 0.3`` offers a third of the load of one at 1; its
  throughputs are a third and its latencies lower, whatever the code did.
* **baseline** (the bare handler's POST/s, measured at the start of each run):
  the machine.  Refused when the larger is more than ``BASELINE_TOLERANCE``
  (1.2×) the smaller, or when either run has none (``--no-baseline``: the
  machine is then unknown).  Why 1.2: the baseline is the machine's speed for
  this very work measured with this very generator, so two runs whose baselines
  differ by more than a fifth ran on what is, for these figures, another
  machine — a 25 % change between them says more about the machine than about
  the code.  It is also about the spread of the baseline itself on one busy
  2-core machine within minutes (the reference runs of one sitting, 2026-11-28,
  spanned 3,399–4,690 POST/s): below 1.2× a difference is within that noise,
  above it the load on the machine changed.  Figures per baseline POST/s
  correct rates for it, not latencies nor CPU per request.
* **commit**: informational only — a different commit is what a comparison is for.

Incomparable runs still get their side-by-side figures and charts, without the
change column, unless the caller insists (``--compare-anyway``): then the
changes are shown under a warning naming what differs.
"""

from __future__ import annotations

from typing import Any

from harness import numfmt

BASELINE_TOLERANCE = 1.2  # larger ÷ smaller bare-handler POST/s beyond which runs differ


def _baseline(summary: dict[str, Any]) -> float | None:
    return (summary.get("baseline") or {}).get("bare_post_rps")


def _shown(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value)) or "none"
    return "–" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """What makes a percentage between runs ``a`` and ``b`` meaningless, one line each
    ("scale: A 0.3, B 1"); empty when they compare."""
    found = []
    for key in ("scenario", "scale", "seed", "paths"):
        va, vb = a.get(key), b.get(key)
        if key == "paths":
            va, vb = sorted(va or []), sorted(vb or [])
        if va != vb:
            found.append(f"{key}: A {_shown(va)}, B {_shown(vb)}")
    ba, bb = _baseline(a), _baseline(b)
    if not ba or not bb:
        missing = " and ".join(name for name, v in (("A", ba), ("B", bb)) if not v)
        found.append(f"baseline: not measured in {missing} (--no-baseline): "
                     "the machines cannot be compared")
    elif max(ba, bb) / min(ba, bb) > BASELINE_TOLERANCE:
        found.append(f"baseline: A {numfmt.rate(ba)}, B {numfmt.rate(bb)} POST/s "
                     f"({numfmt.ratio(max(ba, bb) / min(ba, bb))}, more than "
                     f"{numfmt.ratio(BASELINE_TOLERANCE)}): the machine differed")
    return found


def commits(a: dict[str, Any], b: dict[str, Any]) -> str:
    """The two runs' commits, for the comparison's header (never a reason to refuse)."""
    ca, cb = (str(s.get("git_commit") or "unknown")[:12] for s in (a, b))
    return f"commit: A `{ca}`, B `{cb}`" + (" (the same)" if ca == cb else "")
