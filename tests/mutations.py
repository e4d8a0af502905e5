"""Switch each guarantee's mechanism off and see its proving tests fail.

    python -m tests.mutations              # every mutation (~10 minutes on 2 cores)
    python -m tests.mutations fencing ack  # some, by name
    python -m tests.mutations --list

For each mutation: the work tree is copied (tracked files as they are now, not
as committed), one exact piece of code is replaced in the copy, and the tests
named for it run there.  A mutation is *caught* when those tests fail; one they
survive is a test that does not prove its guarantee.  The table it prints is the
one in docs/testing.md.  Not part of the suite: a mutation run takes minutes.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_SKIP = shutil.ignore_patterns(".git", ".data", "results", "__pycache__", "*.egg-info",
                               ".ruff_cache", ".mypy_cache", ".pytest_cache")


@dataclass(frozen=True)
class Mutation:
    name: str
    guarantee: str  # the row of README's failure table (or the behaviour) it breaks
    what: str  # the mechanism switched off, in words
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


MUTATIONS: tuple[Mutation, ...] = ()  # filled in below


def apply(mutation: Mutation, tree: Path) -> None:
    target = tree / mutation.path
    text = target.read_text()
    count = text.count(mutation.old)
    if count != 1:
        raise SystemExit(f"{mutation.name}: the code to replace occurs {count} times in "
                         f"{mutation.path} (must be exactly once): update the mutation")
    target.write_text(text.replace(mutation.old, mutation.new))


def run(mutation: Mutation, *, mutate: bool = True) -> tuple[bool, float, str]:
    """(the tests failed, seconds, the tail of their output) in a mutated copy."""
    with tempfile.TemporaryDirectory(prefix="mutation-") as tmp:
        tree = Path(tmp) / "tree"
        shutil.copytree(ROOT, tree, ignore=_SKIP, symlinks=True)
        if mutate:
            apply(mutation, tree)
        started = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-x",
             "--timeout", "300", *mutation.tests],
            cwd=tree, capture_output=True, text=True, timeout=1200)
        seconds = time.monotonic() - started
    if result.returncode not in (0, 1):  # 2-5: interrupted, usage, collection problems
        raise SystemExit(f"{mutation.name}: pytest exited {result.returncode}:\n"
                         f"{result.stdout[-3000:]}{result.stderr[-2000:]}")
    return result.returncode == 1, seconds, result.stdout[-1500:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.mutations",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="mutations to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--baseline", action="store_true",
                        help="also run each mutation's tests unmutated: they must pass")
    args = parser.parse_args(argv)
    known = {m.name: m for m in MUTATIONS}
    unknown = [name for name in args.names if name not in known]
    if unknown:
        parser.error(f"unknown mutation(s): {', '.join(unknown)}; see --list")
    chosen = [known[name] for name in args.names] if args.names else list(MUTATIONS)
    if args.list:
        for m in chosen:
            print(f"{m.name:24} {m.what}")
        return 0
    print("| guarantee | mutation | caught by | result |")
    print("|---|---|---|---|")
    survived = 0
    for mutation in chosen:
        if args.baseline:
            failed, _, tail = run(mutation, mutate=False)
            if failed:
                print(f"{mutation.name}: its tests fail unmutated:\n{tail}", file=sys.stderr)
                return 2
        caught, seconds, tail = run(mutation)
        survived += not caught
        tests = ", ".join(f"`{t.rsplit('::', 1)[-1]}`" for t in mutation.tests)
        verdict = f"caught ({seconds:.0f} s)" if caught else "**SURVIVED**"
        print(f"| {mutation.guarantee} | `{mutation.name}`: {mutation.what} | {tests} | "
              f"{verdict} |", flush=True)
        if not caught:
            print(tail, file=sys.stderr)
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
