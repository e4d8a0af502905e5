"""A py-spy profile of the server, read as the pipeline's stages.

``py-spy record --format raw`` writes one line per distinct stack: frames from
the root to the leaf, ``;``-separated, then the sample count. A sample is
charged to the deepest frame that belongs to this project (``server/``), since
library frames below it (redis-py parsing a reply, psycopg2 quoting a query)
do that frame's work; a stack with no project frame is charged by the library
it is in (tornado: HTTP; uvloop/asyncio: the loop itself, whose C code reads
and writes the sockets and runs the callbacks; the start-up frames every stack
has at its root, ``serving.py`` and the like, are skipped). Handler frames with
tornado frames below them (``finish``, ``write``) are HTTP too.

    .venv/bin/py-spy record --pid PID --duration 20 --format raw --output drain.txt
    .venv/bin/python -m harness.stages drain.txt

docs/performance.md has the profiles taken this way and what they drove.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

# (stage, path fragment, function names or None for any), first match wins.
_PROJECT_RULES: tuple[tuple[str, str, tuple[str, ...] | None], ...] = (
    ("fold", "server/storage/standings.py", None),
    ("write", "server/storage/points.py", None),
    ("settle", "server/queue/redis_queue.py", ("settle", "release", "renew")),
    ("claim", "server/queue/redis_queue.py", ("claim",)),
    ("enqueue", "server/queue/redis_queue.py", None),
    ("claim", "server/queue/chunks.py", ("from_payload",)),
    ("enqueue", "server/queue/chunks.py", None),
    ("write", "server/queue/settlement.py", None),
    ("settle", "server/queue/lease.py", None),
    ("claim", "server/queue/worker.py", None),
    ("enqueue", "server/ingest/accept.py", None),
    ("validate", "server/points.py", None),
    ("decode", "server/handlers/jsonbody.py", None),
    ("bulk parse", "server/ingest/bulk.py", None),
    ("auth", "server/access/auth.py", None),
    ("auth", "server/storage/tokens.py", None),
    ("reads", "server/storage/reads.py", None),
    ("reads", "server/cache.py", None),
    ("loop monitor", "server/ops/loop_monitor.py", None),
    ("handler", "server/handlers/", None),
    ("other (server)", "server/", None),
)
_LIBRARY_RULES: tuple[tuple[str, str], ...] = (
    ("HTTP", "tornado/"),
    ("Redis client", "redis/"),
    ("PostgreSQL client", "aiopg/"),
    ("PostgreSQL client", "psycopg2/"),
    ("loop", "uvloop/"),
    ("loop", "asyncio/"),
    ("loop", "run.py"),
)
# Where the process starts: every stack has them at its root, so they say nothing.
_ENTRY_FILES = ("run.py",)
_ENTRY_FOLDER = "server/runtime/"
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^():]*)(?::\d+)?\)$")


def _frames(stack: str) -> list[tuple[str, str]]:
    """(function, file) per frame, root first."""
    frames = []
    for raw in stack.split(";"):
        match = _FRAME.match(raw.strip())
        frames.append((match["function"], match["file"]) if match else (raw.strip(), ""))
    return frames


def _project_stage(function: str, file: str) -> str | None:
    function = function.rpartition(".")[2]  # py-spy qualifies methods: Chunk.from_payload
    for stage, fragment, functions in _PROJECT_RULES:
        if fragment in file and (functions is None or function in functions):
            return stage
    return None


def stage_of(stack: str) -> str:
    """The stage one sampled stack is charged to (see the module docstring)."""
    frames = _frames(stack)
    for depth in range(len(frames) - 1, -1, -1):
        function, file = frames[depth]
        if (("/server/" not in file and not file.startswith("server/"))
                or file.endswith(_ENTRY_FILES) or _ENTRY_FOLDER in file):
            continue
        stage = _project_stage(function, file) or "other (server)"
        below = frames[depth + 1:]
        if stage == "handler" and any("tornado/" in f for _, f in below):
            return "HTTP"
        return stage
    for _, file in reversed(frames):
        for stage, fragment in _LIBRARY_RULES:
            if fragment in file:
                return stage
    return "other"


def stages(lines: list[str]) -> Counter[str]:
    """Samples per stage from the lines of a ``--format raw`` profile."""
    counts: Counter[str] = Counter()
    for line in lines:
        stack, _, count = line.rstrip().rpartition(" ")
        if stack and count.isdigit():
            counts[stage_of(stack)] += int(count)
    return counts


def table(counts: Counter[str]) -> str:
    """A Markdown table of each stage's share of the samples, largest first."""
    total = sum(counts.values()) or 1
    rows = ["| stage | samples | share |", "|---|---|---|"]
    rows += [f"| {stage} | {n:,} | {n / total:.1%} |" for stage, n in counts.most_common()]
    return "\n".join(rows)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m harness.stages PROFILE.txt  (py-spy --format raw)",
              file=sys.stderr)
        return 2
    print(table(stages(Path(argv[0]).read_text().splitlines())))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
