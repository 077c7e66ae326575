"""The benchmarks page, from the JSON lines `make bench` keeps in bench/results/<name>.json.

Every script in bench/ ends with one JSON object on stdout. `make bench` runs each script and
pipes that last line through `python docs/gen_benchmarks.py stamp`, which checks it is JSON and
adds when and on what commit it was measured:

    .venv/bin/python bench/metering.py | tail -n 1 | .venv/bin/python docs/gen_benchmarks.py stamp > bench/results/metering.json

docs/gen_reference.py then calls `benchmarks_page` to render docs/benchmarks/index.md: one row per
headline figure (value, same-run baseline, ratio, date), "not measured yet" for a bench without a
result file, and every figure of each result below. The headline figures of each bench are
named in HEADLINES; a bench not named there still gets its full list of figures.
"""
from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

HEADLINES: dict[str, list[tuple[str, str, str | None, str | None]]] = {
    # bench: [(figure, value key, same-run baseline key, ratio key)]; keys are dotted paths
    "api": [("runtime reads, 200 clients back to back: p99 ms", "runtime_reads.p99_ms", None, "read_p99_vs_aim"),
            ("runtime reads, 200 clients polling each second: p99 ms", "runtime_polls.p99_ms", None, "poll_p99_vs_aim"),
            ("definition add, one client: p50 ms", "definition_add_one_client.p50_ms", None, None)],
    "archive": [("export of 1,000,000 events, events/s", "large.export_per_s", "raw_read_per_s", "export_vs_raw_read"),
                ("import of 1,000,000 events, events/s", "large.import_per_s", "loader_per_s", "import_vs_loader")],
    "broker_loss": [("stall when a plain broker dies: s", "plain_broker.max_latency_s", "baseline.max_latency_s",
                     "plain_broker.stall_ratio_to_baseline_max"),
                    ("stall when the controller dies: s", "controller.max_latency_s", "baseline.max_latency_s",
                     "controller.stall_ratio_to_baseline_max")],
    "commands": [("command latency at 1,000/s: p99 ms", "p99_ms", None, None),
                 ("node CPU per command: ms", "node_cpu_ms_per_command", None, None)],
    "console": [("new event on 20 consoles: p99 ms", "p99_ms", None, "p99_vs_aim")],
    "health": [("health samples/s, one worker (MemberHealth against HealthStat records)", "samples_per_s",
                "drain_before.samples_per_s", "samples_ratio_after_before"),
               ("lag flat at the sustained rate", "lag_flat", None, None),
               ("faust agent, stream.take, no work: records/s", "faust_take_records_per_s",
                "bare_aiokafka_records_per_s", None),
               ("ScaleCluster records per steady cluster-hour", "steady_cluster_hour.after.commands",
                "steady_cluster_hour.before.commands", None)],
    "idle": [("idle platform, share of a core", "cpu_share_total", "baseline.cpu_share_total", "cpu_vs_baseline"),
             ("definition add: median ms", "definition_add_ms_median", "baseline.definition_add_ms_median",
              "definition_add_vs_baseline")],
    "lb": [("requests/s through HAProxy", "proxy_rps", "direct_rps", "rps_ratio"),
           ("MemberActivated to first proxied request: median s", "active_to_first_request_s.median", None, None)],
    "log_throughput": [("log read decoded in full (aiokafka), records/s", "read_decoded_aiokafka_per_s",
                        "read_raw_aiokafka_per_s", "ratio"),
                       ("log read decoded to the envelope (aiokafka), records/s", "read_head_aiokafka_per_s",
                        "read_raw_aiokafka_per_s", "ratio_head")],
    "metering": [("metering fold, commits/s", "metering_commits_per_s", "baseline_commits_per_s", "ratio")],
    "mock_iaas": [("node create over HTTP: ms", "create_ms_http", "create_ms_in_process", "create_ratio"),
                  ("node list over HTTP: ms", "list_ms_http", "list_ms_in_process", "list_ratio")],
    "reaction": [("load step to ScalingDecided: median s", "to_scaling_decided_s", None, "ratio_to_aim")],
    "replay": [("cold rebuild, events/s", "rebuild_events_per_s", "decode_events_per_s", "ratio")],
    "replay_at": [("whole platform at a past instant: p95 s", "replay_at_p95_s", "cold_rebuild_s",
                   "replay_at_p95_to_cold_ratio"),
                  ("why on an event: p95 ms", "why_p95_ms", None, None),
                  ("snapshot bytes per aggregate: largest", "snapshot_bytes_largest", "snapshot_bytes_median", None)],
    "revocation": [("revoked token still works: p50 ms", "lag_p50_ms", "write_p50_ms", "ratio_lag_to_write")],
    "sealing": [("ScaleCluster write, sealed: µs", "scale_cluster_sealed_us", "scale_cluster_us", "scale_cluster_ratio"),
                ("AddCartridge write, sealed: µs", "add_cartridge_sealed_us", "add_cartridge_us", "add_cartridge_ratio")],
    "secure": [("idle platform with --secure, share of a core", "secure.idle_cpu_share",
                "baseline_plaintext.idle_cpu_share", "idle_cpu_vs_plaintext"),
               ("command with --secure: p50 ms", "secure.command_ms_p50", "baseline_plaintext.command_ms_p50",
                "command_p50_vs_plaintext"),
               ("command with --secure: p99 ms", "secure.command_ms_p99", "baseline_plaintext.command_ms_p99",
                "command_p99_vs_plaintext")],
    "signing": [("health records checked, records/s", "checked_per_s", "decode_per_s", "ratio_checked_to_decode")],
    "fold": [("decide + apply CPU per command, 10,000 members: µs", "us_per_command_after.10000",
              "us_per_command_before.10000", "ratio.10000"),
             ("cold fold without the broker, events/s", "replay_after.rebuild", "replay_before.rebuild",
              "replay_rebuild_ratio_to_decode_after")],
    "simulate": [("CPU per cluster-step, 1,000 clusters x 24 h: µs", "cpu_us_per_cluster_step",
                  "stepped_cpu_us_per_cluster_step", "ratio_to_stepped"),
                 ("simulated seconds per wall second (1,000 clusters)", "sim_seconds_per_wall_second", None,
                  "ratio_to_aim")],
    "takeover": [("SIGTERM to answers from another node: median s", "sigterm_median_s", None, None),
                 ("kill -9 to answers from another node: median s", "sigkill_median_s", None, None)],
}


def lookup(result: dict, path: str | None):
    if path is None:
        return None
    value = result
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def shown(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.3f}".rstrip("0").rstrip(".")
    if isinstance(value, int):
        return f"{value:,}"
    return " ".join(str(value).split()).replace("|", "\\|")


def flatten(result: dict, prefix: str = ""):
    for key, value in result.items():
        if isinstance(value, dict):
            yield from flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def benches(bench_dir: Path) -> list[str]:
    return sorted(p.stem for p in bench_dir.glob("*.py") if p.stem != "common")


def benchmarks_page(bench_dir: Path) -> str:
    results_dir = bench_dir / "results"
    lines = ["<!-- generated by docs/gen_benchmarks.py from bench/results/: do not edit, run `make bench` "
             "then `make docs` -->", "", "# Benchmarks", "",
             "The latest figure of each benchmark, as `make bench` recorded it in `bench/results/<name>.json` "
             "(each script's last stdout line, stamped with the date and commit). The baseline is measured in "
             "the same run, so quote the ratios: the machines these run on are shared and their absolute "
             "figures move with the load. How each bench measures, and the figures recorded by hand along "
             "the way: [What was measured](history.md).", "",
             "| bench | figure | value | same-run baseline | ratio | measured |", "|---|---|---|---|---|---|"]
    measured: dict[str, dict] = {}
    for name in benches(bench_dir):
        file = results_dir / f"{name}.json"
        try:
            measured[name] = json.loads(file.read_text())
        except (OSError, ValueError):
            lines.append(f"| `bench/{name}.py` | | not measured yet | | | |")
            continue
        result = measured[name]
        date = shown(result.get("measured_at", ""))[:10]
        rows = HEADLINES.get(name) or [("(see all figures below)", None, None, None)]
        for figure, value, baseline, ratio in rows:
            lines.append(f"| `bench/{name}.py` | {figure} | {shown(lookup(result, value))} | "
                         f"{shown(lookup(result, baseline))} | {shown(lookup(result, ratio))} | {date} |")
    lines.append("")
    for name, result in measured.items():
        lines += [f"## {name}", "", f"`bench/{name}.py`, measured {shown(result.get('measured_at', 'at an unknown time'))}"
                  + (f" on commit `{result['commit']}`" if result.get("commit") else "") + ".", "",
                  "| figure | value |", "|---|---|"]
        for key, value in flatten(result):
            if key in ("bench", "measured_at", "commit"):
                continue
            lines.append(f"| `{key}` | {shown(value) if not isinstance(value, list) else shown(json.dumps(value))} |")
        lines.append("")
    return "\n".join(lines)


def stamp() -> None:
    """stdin: a bench's last stdout line; stdout: it with `measured_at` and `commit`. Exit 1 if it
    is not one JSON object (the bench failed before its result)."""
    line = sys.stdin.read().strip()
    try:
        result = json.loads(line)
        assert isinstance(result, dict)
    except (ValueError, AssertionError):
        sys.exit(f"not a benchmark result (one JSON object): {line[:200]!r}")
    result["measured_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    try:
        result["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                          text=True, check=True, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    print(json.dumps(result))


if __name__ == "__main__":
    if sys.argv[1:] == ["stamp"]:
        stamp()
    else:
        sys.exit("usage: gen_benchmarks.py stamp < last-line-of-a-bench > bench/results/NAME.json "
                 "(the page itself: docs/gen_reference.py)")
