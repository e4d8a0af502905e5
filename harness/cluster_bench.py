"""One scenario against ``serve`` on a local Redis Cluster, once per ``QUEUE_SHARDS``.

    .venv/bin/python -m harness.cluster_bench competition_burst --shards 1,3

For each value: a fresh cluster of three primaries with a replica each (the
launcher the tests use too, ``harness/redis_cluster.py``, on free ports), ``run.py serve``
on a fresh data directory (embedded PostgreSQL) with
``REDIS_URL=redis+cluster://...`` and that ``QUEUE_SHARDS``, then ``run.py
bench SCENARIO --target`` against it (pipelined path).  Everything started is
stopped by pid afterwards.  Each run's report is in its own results directory;
the summary line per run gives its accepted POST/s and its lag.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from harness.redis_cluster import RedisCluster
from harness.server import ROOT, ServeProcess
from server.embedded import EmbeddedPostgres


def run_one(scenario: str, shards: int, scale: float, out: Path) -> int:
    with tempfile.TemporaryDirectory(prefix=f"cluster-bench-{shards}-") as tmp:
        cluster = RedisCluster(Path(tmp) / "cluster").start()
        data_dir = Path(tmp) / "data"
        server = None
        try:
            server = ServeProcess(data_dir, env={
                "REDIS_URL": cluster.url, "QUEUE_SHARDS": str(shards),
                "QUEUE_FSYNC": "everysec"})  # logging as a default serve has it
            return subprocess.call(
                [sys.executable, "run.py", "bench", scenario, "--paths", "pipelined",
                 "--target", server.url, "--token", server.admin_token,
                 "--database-url", server.database_url, "--scale", str(scale),
                 "--out", str(out / f"shards-{shards}")], cwd=ROOT)
        finally:
            if server is not None:
                server.terminate()
            EmbeddedPostgres(data_dir).stop(even_if_reused=True)
            cluster.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario")
    parser.add_argument("--shards", default="1,3", help="comma-separated QUEUE_SHARDS values")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results" / "cluster")
    args = parser.parse_args(argv)
    codes = [run_one(args.scenario, int(n), args.scale, args.out)
             for n in args.shards.split(",")]
    return max(codes)


if __name__ == "__main__":
    sys.exit(main())
