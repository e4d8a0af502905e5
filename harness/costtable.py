"""report.md's baseline line and "Cost per request and per point" table, from summary.json.

Apart from ``report`` because the cost model has its own reading rules: a
group that sent no points is costed per request, the drain only in CPU
seconds (it serves no requests, it commits what the groups accepted), and a
run against ``--target`` has no CPU figures at all — said so, never shown as 0.
"""

from __future__ import annotations

from typing import Any

from harness import numfmt

NOT_MEASURED = "not measured"


def baseline_line(summary: dict[str, Any]) -> str:
    """One sentence for the report's header: the bare stack's POST/s, or why there is none."""
    base = summary.get("baseline")
    if not base:
        return ("Baseline: not measured (`--no-baseline`, or a run from before baselines): "
                "`× baseline` thresholds are not measured.")
    return (f"Baseline: a bare tornado+uvloop POST handler answered "
            f"**{numfmt.rate(base['bare_post_rps'])} POST/s** ({base['connections']} "
            f"keep-alive connections, {base['seconds']:g} s), measured at the start of this "
            "run; `× baseline` thresholds and `rate_of_baseline` rates are read against it.")


def _store_cell(record: dict[str, Any], store: str) -> str:
    """A store's µs per point, or per request for a group that sent no points."""
    if record["cpu_s"] is None:
        return NOT_MEASURED
    per_point = (record["cpu_us_per_point"] or {}).get(store)
    if per_point is not None:
        return numfmt.time(per_point)
    per_request = (record["cpu_us_per_request"] or {}).get(store)
    return f"{numfmt.time(per_request)} /request" if per_request is not None else "–"


def _cost_row(path: str, record: dict[str, Any]) -> str:
    """CPU per request and per point: what the work cost."""
    if record["cpu_s"] is None:
        server_req = server_point = NOT_MEASURED
    else:
        server_req = numfmt.time((record["cpu_us_per_request"] or {}).get("server"))
        server_point = numfmt.time((record["cpu_us_per_point"] or {}).get("server"))
    return (f"| {path} | {record['label']} | {numfmt.count(record['requests'])} | "
            f"{numfmt.count(record['points'])} | {server_req} | {server_point} | "
            f"{_store_cell(record, 'postgres')} | {_store_cell(record, 'redis')} |")


def _time_row(path: str, record: dict[str, Any]) -> str:
    """Where the time went: CPU seconds, cores, waits for a core, the loop's lag."""
    cpu = record["cpu_s"]
    lag = record.get("loop_lag_ms") or {}
    seconds = (" / ".join(numfmt.cpu_seconds(cpu[s]) for s in ("server", "postgres", "redis"))
               if cpu else NOT_MEASURED)
    return (f"| {path} | {record['label']} | {numfmt.time(record['seconds'])} | {seconds} | "
            f"{numfmt.cores(record.get('server_cores'))} | "
            f"{numfmt.percent(record.get('server_cpu_wait'))} | "
            f"{numfmt.time(lag.get('max'))} | {numfmt.time(lag.get('p99'))} |")


def cost_table(summary: dict[str, Any]) -> list[str]:
    """The section's lines (two tables of 8 columns); none for a run from before the
    cost model.  Every figure of both is also in summary.json (``runs.*.cost``)."""
    runs = {path: run["cost"] for path, run in summary["runs"].items() if run.get("cost")}
    if not runs:
        return []
    records = [(path, record) for path, run_cost in runs.items()
               for record in [*run_cost["groups"], run_cost["drain"], run_cost["whole_run"]]]
    lines = ["", "## Cost per request and per point", "",
             "CPU time spent while each group of phases ran, by the server process, "
             "PostgreSQL (postmaster and backends) and Redis, divided by the group's "
             "requests and accepted points (a group that sent no points: per request). "
             "Points a group accepted but had not committed by its end are committed in "
             "the drain, whose CPU is shown on its own and counted in *whole run*.", "",
             "| path | group | requests | points | server µs/request | server µs/point | "
             "PostgreSQL µs/point | Redis µs/point |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [_cost_row(path, record) for path, record in records]
    lines += ["", "Where the time went: each group's seconds, its CPU seconds, the server's "
              "cores (CPU seconds ÷ wall seconds). *Waits for a CPU*: the share of the wall "
              "time the server's loop was ready to run but every core was busy (Linux "
              "schedstat) — lag the machine adds, not the server. Loop lag: the longest "
              "the server's event loop was held in each second (max and p99 over the "
              "group's seconds).", "",
              "| path | group | s | CPU s server / PG / Redis | server cores | "
              "waits for a CPU | loop lag max ms | loop lag p99 ms |",
              "|---|---|---|---|---|---|---|---|"]
    lines += [_time_row(path, record) for path, record in records]
    if not all(c["cpu_measured"] for c in runs.values()):
        lines += ["", "CPU is not measured against `--target`: the server's processes "
                      "are not this harness's to read."]
    return lines
