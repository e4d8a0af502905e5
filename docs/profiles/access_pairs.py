"""The access line's cost in a served process: wrk one-point POSTs against servers with
ACCESS_LOG=true (the default) and false, from one or more checkouts, in turn.

Each checkout gets two ``run.py serve`` processes (default logging; stdout and
stderr to a file, as a user's ``serve > serve.log 2>&1`` would), plus the bare
tornado handler (``python -m harness.baseline``).  Every round runs ``wrk`` on each
of them in turn (the bare handler first), so that the machine's drift falls on
all of them alike; per server it prints POST/s and the server's CPU per request
(its own user+system time over the requests answered).  The access line costs
the difference of the CPU per request, on and off, of the same checkout.

Usage (from the repository root): ``python docs/profiles/access_pairs.py
[--rounds 3] [--seconds 8] CHECKOUT...`` (each one with ``run.py``).  Needs
``wrk``.  Every process it starts is stopped by pid.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from server.embedded import EmbeddedPostgres, EmbeddedRedis, free_port

_LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {token}"
wrk.body = '{{"competition_id":{cid},"participant_id":{pid},"value":1.5}}'
"""


def _call(url: str, path: str, token: str, body: object) -> dict:
    request = urllib.request.Request(url + path, data=json.dumps(body).encode(),
                                     method="POST",
                                     headers={"Content-Type": "application/json",
                                              "Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return dict(json.loads(response.read()))


class Served:
    """``run.py serve`` from ``checkout`` on a data directory of its own."""

    def __init__(self, checkout: Path, access_log: bool, work: Path) -> None:
        self.name = f"{checkout.name} ACCESS_LOG={str(access_log).lower()}"
        self.data = work / f"{checkout.name}-{access_log}"
        self.log = self.data.with_suffix(".log")
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("LOG_", "DATABASE_URL", "REDIS_URL", "ACCESS_LOG"))}
        env["ACCESS_LOG"] = str(access_log).lower()
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "run.py", "serve", "--data-dir", str(self.data), "--port",
                 "0"], cwd=checkout, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180
        while not (match := re.search(r"listening on (http://\S+) ",
                                      self.log.read_text(errors="replace"))):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} did not start: see {self.log}")
            time.sleep(0.2)
        self.url = match[1]
        token = (self.data / "admin-token").read_text().strip()
        cid = _call(self.url, "/v1/competitions", token, {"slug": "w", "name": "W"})["id"]
        parts = _call(self.url, f"/v1/competitions/{cid}/participants", token,
                      {"participants": [{"external_ref": "1", "display_name": "1"}]})
        self.lua = self.data.with_suffix(".lua")
        self.lua.write_text(_LUA.format(token=token, cid=cid,
                                        pid=parts["participants"][0]["id"]))
        self.target = self.url + "/v1/points"

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Bare:
    """The bare tornado handler the harness's baseline measures."""

    name = "bare handler"

    def __init__(self, work: Path) -> None:
        port = free_port()
        self.proc = subprocess.Popen([sys.executable, "-m", "harness.baseline", str(port)],
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"
        self.target = f"http://127.0.0.1:{port}/bare"
        self.lua = work / "bare.lua"
        self.lua.write_text(_LUA.format(token="-", cid=1, pid=1))

    def cpu_s(self) -> float:
        return Served.cpu_s(self)  # type: ignore[arg-type]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def wrk(target: Bare | Served, seconds: float) -> tuple[float, float]:
    """POST/s and the server's µs of CPU per request over one wrk run."""
    before = target.cpu_s()
    out = subprocess.run(["wrk", "-t1", "-c100", f"-d{seconds:g}s", "-s", str(target.lua),
                          target.target], capture_output=True, text=True, check=True).stdout
    cpu = target.cpu_s() - before
    requests = int(re.search(r"(\d+) requests in", out)[1])  # type: ignore[index]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError(f"{target.name}: {errors[1]} error answers\n{out}")
    return requests / seconds, cpu / requests * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkouts", nargs="+", type=Path)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="access-pairs-"))
    targets: list[Bare | Served] = []
    try:
        targets.append(Bare(work))
        for checkout in args.checkouts:
            for access_log in (True, False):
                targets.append(Served(checkout.resolve(), access_log, work))
        for target in targets:  # warm-up: connections, caches, the first points
            wrk(target, 2)
        for number in range(1, args.rounds + 1):
            for target in targets:
                rate, cpu_us = wrk(target, args.seconds)
                print(f"round {number}  {target.name:40s} {rate:8.0f} POST/s "
                      f"{cpu_us:6.1f} µs CPU/request", flush=True)
    finally:
        for target in targets:
            target.stop()
        for served in targets:  # after a clean stop they are gone already
            if isinstance(served, Served):
                EmbeddedRedis(served.data).stop(even_if_reused=True)
                EmbeddedPostgres(served.data).stop(even_if_reused=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
