"""Performance baseline of the fleet's three services in one command.

Runs the proxy, central and agent benchmarks with short, fixed parameters (the same every time,
so two baselines compare), then writes ``bench/results/baseline.md``: the headline figures as
one table, the machine's load before and after, the commit, and every benchmark's full output.
A regression is then one command and one ``git diff bench/results/baseline.md`` away.

    .venv/bin/python bench/baseline.py                    # all three, about 5 minutes
    .venv/bin/python bench/baseline.py --only proxy       # one of proxy, central, agent
    .venv/bin/python bench/baseline.py --out /tmp/b.md    # elsewhere (compare with the committed)

The figures are only as good as the machine is quiet: the load averages are written beside them,
and a run that started while something else kept the machine busy is marked as noisy.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


@dataclass(frozen=True)
class Bench:
    name: str
    argv: list[str]
    # (label, regex with one group) pulled from the output for the headline table
    headlines: list[tuple[str, str]]


BENCHES = [
    Bench(
        "proxy",
        ["bench/proxy_bench.py", "--runs", "1", "--seconds", "10", "--churn-seconds", "10"],
        [
            ("1 ch x 500 viewers: TTFB p99 ms", r"1ch x 500 viewers.*?ttfb_p99_ms=([\d.]+)"),
            ("1 ch x 500 viewers: CPU-s per GB", r"1ch x 500 viewers.*?cpu_s_per_GB=([\d.]+)"),
            ("1 ch x 500 viewers: stalled", r"1ch x 500 viewers.*?stalled=(\d+)"),
            ("1 ch x 500 viewers: peak RSS MB", r"1ch x 500 viewers.*?peak_rss_MB=([\d.]+)"),
            ("20 ch x 10 viewers: CPU-s per GB", r"20ch x 10 viewers.*?cpu_s_per_GB=([\d.]+)"),
            (
                "50 fast readers: MB/s via proxy",
                r"fast readers via proxy.*?aggregate_MBps=([\d.]+)",
            ),
            ("50 fast readers: MB/s direct", r"to the source.*?aggregate_MBps=([\d.]+)"),
            ("fast + slow: fast viewers stalled", r"fast \+ \d+ at 1/10 rate.*?stalled=(\d+)"),
            ("churn: errors", r"churn over.*?errors=(\d+)"),
        ],
    ),
    Bench(
        "central",
        ["bench/central_bench.py", "--duration", "10", "--hb-burst", "200"],
        [
            ("CPU per heartbeat, ms", r"central CPU per heartbeat: ([\d.]+) ms"),
            ("claim latency p50, ms", r"claim latency \(client.*?p50 ([\d.]+) ms"),
            ("claim latency p99, ms", r"claim latency \(client.*?p99 ([\d.]+) ms"),
            ("closed loop claims/s", r"closed loop, \d+ connections: (\d+) claims/s"),
        ],
    ),
    Bench(
        "agent",
        ["bench/agent_bench.py", "--engines", "10", "--poll-engines", "20", "--window", "15"],
        [
            ("engines ready, median s", r"median ([\d.]+) s, max"),
            ("all engines ready after, s", r"all ready after ([\d.]+) s"),
            ("agent RSS, MiB", r"agent RSS (\d+) MiB"),
        ],
    ),
]


def run(bench: Bench) -> tuple[str, float, int]:
    """Output (stdout then stderr), wall seconds and exit status of one benchmark."""
    print(f"==> {bench.name}: {' '.join(bench.argv)}", flush=True)
    t0 = time.monotonic()
    proc = subprocess.run(
        [PYTHON, *bench.argv], cwd=ROOT, capture_output=True, text=True, check=False
    )
    output = proc.stdout + (f"\n[stderr]\n{proc.stderr}" if proc.returncode else "")
    print(output, flush=True)
    return output, time.monotonic() - t0, proc.returncode


def headline(bench: Bench, output: str) -> list[tuple[str, str]]:
    rows = []
    for label, pattern in bench.headlines:
        found = re.search(pattern, output)
        rows.append((label, found.group(1) if found else "(not in output)"))
    return rows


def commit() -> str:
    described = subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True
    )
    return described.stdout.strip() or "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", action="append", choices=[b.name for b in BENCHES])
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/baseline.md")
    args = parser.parse_args()
    chosen = [b for b in BENCHES if not args.only or b.name in args.only]
    cores = os.cpu_count() or 1
    load_before = os.getloadavg()
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    results = [(b, *run(b)) for b in chosen]
    load_after = os.getloadavg()
    # The load after includes the benchmarks' own work (the agent's engines most of all); only
    # the load before says whether something else was running.
    noisy = load_before[0] > cores / 2

    lines = [
        "# Performance baseline",
        "",
        f"Written by `bench/baseline.py` on {started}, commit `{commit()}`, {cores} cores; "
        f"load average {load_before[0]:.1f} before"
        + (" (**noisy: something else was running**)" if noisy else "")
        + f", {load_after[0]:.1f} after (the benchmarks' own work).",
        "",
        "Regenerate with `.venv/bin/python bench/baseline.py` and compare with `git diff`. "
        "The full results, with several runs each, are in the per-service files beside this one.",
        "",
        "| bench | figure | value |",
        "|---|---|---|",
    ]
    for bench, output, _, _ in results:
        lines += [
            f"| {bench.name} | {label} | {value} |" for label, value in headline(bench, output)
        ]
    for bench, output, seconds, status in results:
        state = "ok" if status == 0 else f"**failed, exit {status}**"
        lines += [
            "",
            f"## {bench.name}: `{' '.join(bench.argv)}` ({seconds:.0f} s, {state})",
            "",
            "```",
            output.strip(),
            "```",
        ]
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    return 0 if all(status == 0 for _, _, _, status in results) else 1


if __name__ == "__main__":
    sys.exit(main())
