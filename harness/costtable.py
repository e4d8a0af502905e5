"""report.md's baseline line and "Cost per request and per point" table, from summary.json.

Apart from ``report`` because the cost model has its own reading rules: a
group that sent no points is costed per request, the drain only in CPU
seconds (it serves no requests, it commits what the groups accepted), and a
run against ``--target`` has no CPU figures at all — said so, never shown as 0.
"""

from __future__ import annotations

from typing import Any

NOT_MEASURED = "not measured"


def _num(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}" if abs(value) < 1000 else f"{value:,.0f}"


def baseline_line(summary: dict[str, Any]) -> str:
    """One sentence for the report's header: the bare stack's POST/s, or why there is none."""
    base = summary.get("baseline")
    if not base:
        return ("Baseline: not measured (`--no-baseline`, or a run from before baselines): "
                "`× baseline` thresholds are not measured.")
    return (f"Baseline: a bare tornado+uvloop POST handler answered "
            f"**{base['bare_post_rps']:,.0f} POST/s** ({base['connections']} keep-alive "
            f"connections, {base['seconds']:g} s), measured at the start of this run; "
            "`× baseline` thresholds and `rate_of_baseline` rates are read against it.")


def _store_cell(record: dict[str, Any], store: str) -> str:
    """A store's µs per point, or per request for a group that sent no points."""
    if record["cpu_s"] is None:
        return NOT_MEASURED
    per_point = (record["cpu_us_per_point"] or {}).get(store)
    if per_point is not None:
        return _num(per_point)
    per_request = (record["cpu_us_per_request"] or {}).get(store)
    return f"{_num(per_request)} /request" if per_request is not None else "–"


def _row(path: str, record: dict[str, Any]) -> str:
    cpu = record["cpu_s"]
    per_request = record["cpu_us_per_request"] or {}
    per_point = record["cpu_us_per_point"] or {}
    lag = record.get("loop_lag_ms") or {}
    seconds = (" / ".join(_num(cpu[s], 2) for s in ("server", "postgres", "redis"))
               if cpu else NOT_MEASURED)
    if cpu is None:
        server_req = server_point = NOT_MEASURED
    else:
        server_req, server_point = (_num(per_request.get("server")),
                                    _num(per_point.get("server")))
    return (f"| {path} | {record['label']} | {_num(record['seconds'])} | "
            f"{record['requests']:,} | {record['points']:,} | {seconds} | {server_req} | "
            f"{server_point} | {_store_cell(record, 'postgres')} | "
            f"{_store_cell(record, 'redis')} | {_num(record.get('server_cores'), 2)} | "
            f"{_percent(record.get('server_cpu_wait'))} | "
            f"{_num(lag.get('max'))} | {_num(lag.get('p99'))} |")


def _percent(fraction: float | None) -> str:
    return "–" if fraction is None else f"{fraction:.0%}"


def cost_table(summary: dict[str, Any]) -> list[str]:
    """The section's lines; none for a run from before the cost model."""
    runs = {path: run["cost"] for path, run in summary["runs"].items() if run.get("cost")}
    if not runs:
        return []
    lines = ["", "## Cost per request and per point", "",
             "CPU time spent while each group of phases ran, by the server process, "
             "PostgreSQL (postmaster and backends) and Redis, divided by the group's "
             "requests and accepted points (a group that sent no points: per request). "
             "Points a group accepted but had not committed by its end are committed in "
             "the drain, whose CPU is shown on its own and counted in *whole run*. "
             "*Waits for a CPU*: the share of the wall time the server's loop was ready "
             "to run but every core was busy (Linux schedstat) — lag the machine adds, "
             "not the server. "
             "Loop lag: the longest the server's event loop was held in each second "
             "(max and p99 over the group's seconds).", "",
             "| path | group | s | requests | points | CPU s server / PG / Redis | "
             "server µs/request | server µs/point | PostgreSQL µs/point | Redis µs/point | "
             "server cores | waits for a CPU | loop lag max ms | loop lag p99 ms |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for path, run_cost in runs.items():
        for record in [*run_cost["groups"], run_cost["drain"], run_cost["whole_run"]]:
            lines.append(_row(path, record))
    if not all(c["cpu_measured"] for c in runs.values()):
        lines += ["", "CPU is not measured against `--target`: the server's processes "
                      "are not this harness's to read."]
    return lines
