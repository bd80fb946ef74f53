"""Growth curves (issue 17): how the proxy's and central's CPU and memory grow with load.

    .venv/bin/python bench/growth_bench.py                  # full sweep, PNGs in bench/results/
    .venv/bin/python bench/growth_bench.py --quick          # 3 points a curve, PNGs in /tmp
    .venv/bin/python bench/growth_bench.py --only central

Proxy (the harness of bench/proxy_bench.py, its scenario 1/2 as is): the simulator at 4 Mbit/s,
one channel x N viewers and M channels x 10 viewers, a fresh proxy and simulator per point;
measured over --seconds once every viewer has joined: the proxy's CPU (utime+stime from /proc)
as % of a core and CPU-s per GB sent, its peak RSS, join TTFB p50/p99, stalled viewers.

Central (the load generators of bench/central_bench.py): a fresh central per point, E edges x 20
engines registered, then heartbeating every 2 s (the agents' default interval) from a second
process; central's CPU and RSS are measured first with the heartbeats alone (the per-edge cost),
then with a fixed 200 claims/s on top (each released 0.5 s later).

Every point is printed as it ends, then a table of all of them, the least-squares slopes, and
the PNGs (matplotlib, Agg backend): growth_proxy.png (CPU and memory against viewers and against
channels) and growth_central.png (CPU and memory against edges). Viewers and load generators run
on the same machine as the process measured; the 1-minute load average is recorded per point.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvloop

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path[:0] = [str(BENCH), str(REPO)]  # the sibling benches, and tests.support
import central_bench  # noqa: E402
import proxy_bench  # noqa: E402

from tests.support import procs  # noqa: E402

VIEWERS = [10, 50, 200, 500, 1000, 2000]
CHANNELS = [1, 10, 50, 100, 200]
EDGES = [10, 50, 100, 200, 500]
QUICK = {"viewers": [10, 200, 1000], "channels": [1, 20, 50], "edges": [10, 100, 200]}
SERVICES = ["acefleet", "proxy", "orchestrator", "enginesim"]  # the code a point measures
PER_CHANNEL = 10  # viewers per channel on the channels curve
ENGINES = 20  # engines per edge
INTERVAL_S = 2.0  # orchestrator/agent/settings.py heartbeat_interval_s default
CLAIM_RATE = 200.0
CLAIM_HOLD_S = 0.5  # ~100 claims held at once: fits the smallest fleet (10 x 20 engines)


@dataclass
class Point:
    """One measured load point: ``load`` is N viewers, M channels or E edges."""

    curve: str
    load: int
    figures: dict[str, float] = field(default_factory=dict)
    error: str = ""  # a point that failed is reported, not plotted, and the sweep goes on


CURVES = {
    "viewers": "1 channel x N viewers",
    "channels": f"M channels x {PER_CHANNEL} viewers",
    "edges": f"E edges x {ENGINES} engines",
}
PROXY_COLUMNS = [
    ("proxy_cpu_pct", "CPU % core"),
    ("cpu_s_per_GB", "CPU-s/GB"),
    ("peak_rss_MB", "RSS MiB"),
    ("ttfb_p50_ms", "TTFB p50 ms"),
    ("ttfb_p99_ms", "TTFB p99 ms"),
    ("stalled", "stalled"),
    ("below_99pct_rate", "below rate"),
    ("errors", "errors"),
    ("aggregate_MBps", "out MB/s"),
    ("sim_cpu_pct", "simulator CPU %*"),
    ("client_cpu_pct", "viewers' CPU %*"),
    ("machine_busy_pct", "machine busy %*"),
    ("load1", "load 1m"),
]
CENTRAL_COLUMNS = [
    ("hb_cpu_pct", "CPU % core (heartbeats)"),
    ("cpu_pct", f"CPU % core (+{CLAIM_RATE:g} claims/s)"),
    ("idle_rss_MB", "RSS MiB idle"),
    ("peak_rss_MB", "RSS MiB peak"),
    ("hb_sent", "heartbeats sent"),
    ("hb_p99_ms", "heartbeat p99 ms"),
    ("claim_p99_ms", "claim p99 ms"),
    ("claims_not_200", "claims not 200"),
    ("load1", "load 1m"),
]


def load1() -> float:
    return round(os.getloadavg()[0], 2)


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all cores so far, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def children() -> dict[int, str]:
    """This process's child processes: pid -> command name (a scan of /proc: the kernel here has
    no /proc/<pid>/task/<tid>/children)."""
    me, out = os.getpid(), {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):  # gone meanwhile
            name, rest = (entry / "stat").read_text().rsplit(")", 1)
            if int(rest.split()[1]) == me:
                out[int(entry.name)] = name.split("(", 1)[1]
    return out


async def watch_sim(cpu: dict[int, tuple[float, float]], done: asyncio.Event) -> None:
    """The first and last CPU seconds seen of each simulator this process runs, until ``done``."""
    while not done.is_set():
        for pid, name in children().items():
            if name.startswith("acefleet-engine"):
                with contextlib.suppress(OSError):  # gone meanwhile
                    now = procs.cpu_seconds(pid)
                    cpu[pid] = (cpu.get(pid, (now, now))[0], now)
        await asyncio.sleep(0.5)


async def proxy_point(channels: int, per_channel: int, seconds: float) -> dict[str, float]:
    """bench/proxy_bench.py's paced scenario, and what else ran on the machine meanwhile: both
    cores' busy share, this client's CPU and the simulator's, over the whole point."""
    busy0, total0 = machine_busy()
    client0, t0 = time.process_time(), time.monotonic()
    sim_cpu: dict[int, tuple[float, float]] = {}
    done = asyncio.Event()
    watcher = asyncio.create_task(watch_sim(sim_cpu, done))
    try:
        result = await proxy_bench.scenario_paced(channels, per_channel, seconds)
    finally:
        done.set()
        await watcher
    busy1, total1 = machine_busy()
    elapsed = time.monotonic() - t0
    f = {k: float(v) for k, v in result.figures.items()}
    # proxy_bench rounds % of a core to a whole number; CPU-s/GB x GB/s gives two decimals
    f["proxy_cpu_pct"] = round(f["cpu_s_per_GB"] * f["aggregate_MBps"] / 10, 2)
    f["machine_busy_pct"] = round(100 * (busy1 - busy0) / (total1 - total0), 1)
    f["client_cpu_pct"] = round(100 * (time.process_time() - client0) / elapsed, 1)
    f["sim_cpu_pct"] = round(100 * sum(b - a for a, b in sim_cpu.values()) / elapsed, 1)
    f["load1"] = load1()
    return f


def failed(curve: str, load: int, exc: Exception) -> Point:
    print(f"[{CURVES[curve]}] {load}: FAILED {exc!r}", flush=True)
    return Point(curve, load, error=f"{type(exc).__name__}: {exc}"[:120])


# --- proxy -------------------------------------------------------------------------------------
async def proxy_curve(curve: str, loads: list[int], seconds: float) -> list[Point]:
    points = []
    for load in loads:
        channels, per_channel = (1, load) if curve == "viewers" else (load, PER_CHANNEL)
        try:
            figures = await proxy_point(channels, per_channel, seconds)
        except Exception as exc:
            points.append(failed(curve, load, exc))
            continue
        print(
            f"[{CURVES[curve]}] {load}: " + ", ".join(f"{k}={v:g}" for k, v in figures.items()),
            flush=True,
        )
        points.append(Point(curve, load, figures))
    return points


# --- central -----------------------------------------------------------------------------------
def start_central(tmp: Path) -> procs.Service:
    """Central as central_bench runs it: SQLite in ``tmp``, no warm-up, no rate limit."""
    port = procs.free_port()
    env = {
        "ACEFLEET_CENTRAL_LISTEN_PORT": str(port),
        "ACEFLEET_CENTRAL_DATABASE_URL": f"sqlite+aiosqlite:///{tmp}/central.db",
        "ACEFLEET_CENTRAL_SERVICE_KEYS": central_bench.KEY,
        "ACEFLEET_CENTRAL_VIEWER_KEYS": central_bench.VIEWER,
        "ACEFLEET_CENTRAL_HEARTBEAT_INTERVAL_S": str(INTERVAL_S),
        "ACEFLEET_CENTRAL_STALE_AFTER_S": str(INTERVAL_S * 5),
        "ACEFLEET_CENTRAL_LOST_AFTER_S": str(INTERVAL_S * 15),
        "ACEFLEET_CENTRAL_WARMUP_S": "0",
        "ACEFLEET_CENTRAL_WARM_BUFFER_PER_EDGE": "0",
        "ACEFLEET_CENTRAL_LOG_LEVEL": "warning",
        "ACEFLEET_CENTRAL_SERVICE_RATE_LIMIT_RPS": "100000",
    }
    return procs.start(
        "acefleet-central", [], port=port, ready_path="/readyz", log_dir=tmp, env=env
    )


async def watch_rss(pid: int, done: asyncio.Event) -> float:
    """Peak RSS (MiB) of ``pid``, sampled every 0.25 s until ``done``."""
    peak = 0.0
    while not done.is_set():
        peak = max(peak, procs.memory_kib(pid) / 1024)
        await asyncio.sleep(0.25)
    return peak


async def window(pid: int, seconds: float) -> tuple[float, float]:
    """(CPU % of a core, peak RSS MiB) of ``pid`` over ``seconds`` of whatever load runs now."""
    done = asyncio.Event()
    cpu0, t0 = procs.cpu_seconds(pid), time.monotonic()
    watcher = asyncio.create_task(watch_rss(pid, done))
    await asyncio.sleep(seconds)
    done.set()
    peak = await watcher
    return 100 * (procs.cpu_seconds(pid) - cpu0) / (time.monotonic() - t0), peak


async def claims_window(pid: int, port: int, edges: int, seconds: float) -> dict[str, Any]:
    """Claims at CLAIM_RATE for ``seconds`` (central_bench's open loop); central's CPU and RSS."""
    done = asyncio.Event()
    cpu0, t0 = procs.cpu_seconds(pid), time.monotonic()
    watcher = asyncio.create_task(watch_rss(pid, done))
    res = await central_bench.open_loop_claims(port, edges, CLAIM_RATE, seconds, CLAIM_HOLD_S, 16)
    done.set()
    res["cpu_pct"] = 100 * (procs.cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
    res["peak_rss_MB"] = await watcher
    return res


def central_point(edges: int, hb_seconds: float, claim_seconds: float) -> Point:
    """A fresh central with ``edges`` edges: heartbeats alone, then heartbeats and claims."""
    beater: Any = None
    with tempfile.TemporaryDirectory(prefix="growth-central-") as tmp:
        svc = start_central(Path(tmp))
        try:
            pid = svc.proc.pid
            time.sleep(0.5)
            idle = procs.memory_kib(pid) / 1024
            asyncio.run(central_bench.register(svc.port, edges, ENGINES))
            ctx = mp.get_context("spawn")
            out: Any = ctx.Queue()
            settle = INTERVAL_S + 2.0  # the child's start, then one full round of heartbeats
            stop_at = time.monotonic() + settle + hb_seconds + claim_seconds + 1.5
            beater = ctx.Process(
                target=central_bench.heartbeat_process,
                args=(svc.port, edges, ENGINES, INTERVAL_S, stop_at, out),
            )
            beater.start()
            time.sleep(settle)
            hb_cpu, hb_peak = asyncio.run(window(pid, hb_seconds))
            res = asyncio.run(claims_window(pid, svc.port, edges, claim_seconds))
            hb_lat: list[float] = out.get(timeout=stop_at - time.monotonic() + 30)
            beater.join(timeout=10)
            statuses: dict[int, int] = res["statuses"]
            figures = {
                "hb_cpu_pct": round(hb_cpu, 1),
                "cpu_pct": round(res["cpu_pct"], 1),
                "idle_rss_MB": round(idle, 1),
                "peak_rss_MB": round(max(hb_peak, res["peak_rss_MB"]), 1),
                "hb_sent": len(hb_lat),
                "hb_p99_ms": round(central_bench.pct(hb_lat, 0.99) * 1e3, 2),
                "claim_p99_ms": round(central_bench.pct(res["latencies"], 0.99) * 1e3, 2),
                "claims_not_200": sum(n for s, n in statuses.items() if s != 200),
                "load1": load1(),
            }
            point = Point("edges", edges, {k: float(v) for k, v in figures.items()})
            print(
                f"[{CURVES['edges']}] {edges}: "
                + ", ".join(f"{k}={v:g}" for k, v in point.figures.items())
                + f", statuses={statuses}",
                flush=True,
            )
            return point
        finally:
            if beater is not None and beater.is_alive():  # a failed point: not left running
                beater.terminate()
            svc.stop()


# --- reading the points --------------------------------------------------------------------
def slope(points: list[Point], key: str) -> tuple[float, float]:
    """Least-squares line (slope, intercept) of ``key`` against load."""
    xs = [float(p.load) for p in points]
    ys = [p.figures[key] for p in points]
    if len(xs) < 2:
        return float("nan"), float("nan")
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    k = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    return k, my - k * mx


def table(points: list[Point], columns: list[tuple[str, str]]) -> str:
    """A Markdown table: one row a point, its curve and load first."""
    head = ["curve", "load", *(label for _, label in columns)]
    rows = [
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for p in points:
        cells = [f"{p.figures[k]:g}" if k in p.figures else "" for k, _ in columns]
        if p.error:
            cells = [f"failed: {p.error}", *([""] * (len(columns) - 1))]
        rows.append("| " + " | ".join([CURVES[p.curve], str(p.load), *cells]) + " |")
    return "\n".join(rows)


def slopes(points: list[Point]) -> list[str]:
    """The per-unit growth of each curve, as sentences for the report."""
    lines = []
    per = {"viewers": ("viewer", 100), "channels": ("channel", 10), "edges": ("edge", 100)}
    for curve, (unit, scale) in per.items():
        pts = [p for p in points if p.curve == curve and not p.error]
        if len(pts) < 2:
            continue
        keys = ["hb_cpu_pct", "cpu_pct"] if curve == "edges" else ["proxy_cpu_pct"]
        for key in keys:
            k, b = slope(pts, key)
            lines.append(
                f"{CURVES[curve]}: {key} grows {k * scale:.2f} % of a core per {scale} {unit}s "
                f"(intercept {b:.1f} %)"
            )
        k, b = slope(pts, "peak_rss_MB")
        lines.append(
            f"{CURVES[curve]}: peak RSS grows {k * 1024:.0f} KiB per {unit} (intercept {b:.0f} MiB)"
        )
    return lines


# --- figures -------------------------------------------------------------------------------
def fit_label(points: list[Point], key: str, scale: float, unit: str) -> str:
    k, _ = slope(points, key)
    return f"fit: {k * scale:+.2f} {unit}"


def headroom(ax: Any) -> None:
    """Start the y axis at 0 and leave the top third free for the legend."""
    ax.set_ylim(0, ax.get_ylim()[1] * 1.4)


def plot_proxy(points: list[Point], path: Path, caption: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 9), constrained_layout=True)
    for row, curve in enumerate(["viewers", "channels"]):
        pts = [p for p in points if p.curve == curve and not p.error]
        broken = [p for p in points if p.curve == curve and p.error]
        xs = [p.load for p in pts]
        per = (100, "per 100 viewers") if curve == "viewers" else (10, "per 10 channels")
        xlabel = (
            "viewers on one channel (4 Mbit/s each)"
            if curve == "viewers"
            else f"channels ({PER_CHANNEL} viewers each, 4 Mbit/s)"
        )
        cpu_ax = axes[row][0]
        cpu_ax.plot(
            xs,
            [p.figures["proxy_cpu_pct"] for p in pts],
            "o-",
            color="tab:blue",
            label=f"CPU, % of a core ({fit_label(pts, 'proxy_cpu_pct', per[0], '%')} {per[1]})",
        )
        cpu_ax.set_ylabel("proxy CPU (% of one core)")
        for p in pts:  # a point with stalled viewers is not the cost of serving them well
            if p.figures.get("stalled"):
                cpu_ax.annotate(
                    f"{p.figures['stalled']:g} stalled",
                    (p.load, p.figures["proxy_cpu_pct"]),
                    textcoords="offset points",
                    xytext=(-10, 8),
                    ha="right",
                    color="tab:red",
                    fontsize=9,
                )
        for p in broken:
            cpu_ax.plot([p.load], [0], "x", color="tab:red", markersize=10, clip_on=False)
            cpu_ax.annotate(
                "failed (see table)",
                (p.load, 0),
                textcoords="offset points",
                xytext=(-6, 8),
                ha="right",
                color="tab:red",
                fontsize=9,
            )
        headroom(cpu_ax)
        per_gb = cpu_ax.twinx()
        per_gb.plot(
            xs,
            [p.figures["cpu_s_per_GB"] for p in pts],
            "s--",
            color="tab:orange",
            label="CPU-s per GB sent (right axis)",
        )
        per_gb.set_ylabel("CPU seconds per GB sent")
        headroom(per_gb)
        handles = cpu_ax.get_legend_handles_labels()[0] + per_gb.get_legend_handles_labels()[0]
        cpu_ax.legend(handles=handles, loc="upper left", fontsize=9)
        cpu_ax.set_title(f"Proxy CPU vs {curve} ({CURVES[curve]})")
        mem_ax = axes[row][1]
        mem_ax.plot(
            xs,
            [p.figures["peak_rss_MB"] for p in pts],
            "o-",
            color="tab:green",
            label=f"peak RSS ({fit_label(pts, 'peak_rss_MB', per[0], 'MiB')} {per[1]})",
        )
        mem_ax.set_ylabel("proxy resident memory, peak (MiB)")
        headroom(mem_ax)
        mem_ax.legend(loc="upper left", fontsize=9)
        mem_ax.set_title(f"Proxy memory vs {curve} ({CURVES[curve]})")
        for ax in (cpu_ax, mem_ax):
            ax.set_xlabel(xlabel)
            ax.set_xlim(0, max(p.load for p in points if p.curve == curve) * 1.05)
            ax.grid(True, alpha=0.3)
    fig.suptitle(f"acefleet-proxy: cost against load\n{caption}", fontsize=11)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_central(points: list[Point], path: Path, caption: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [p for p in points if not p.error]
    fig, (cpu_ax, mem_ax) = plt.subplots(1, 2, figsize=(13, 5.2), constrained_layout=True)
    xs = [p.load for p in points]
    for key, style, color, name in [
        ("hb_cpu_pct", "o-", "tab:blue", "heartbeats only"),
        ("cpu_pct", "s--", "tab:red", f"heartbeats + {CLAIM_RATE:g} claims/s"),
    ]:
        cpu_ax.plot(
            xs,
            [p.figures[key] for p in points],
            style,
            color=color,
            label=f"{name} ({fit_label(points, key, 100, '%')} per 100 edges)",
        )
    cpu_ax.set_ylabel("central CPU (% of one core)")
    cpu_ax.set_title(f"Central CPU vs edges ({ENGINES} engines each, heartbeat every 2 s)")
    for key, style, color, name in [
        ("peak_rss_MB", "o-", "tab:green", "peak RSS under load"),
        ("idle_rss_MB", ":", "tab:gray", "RSS before any edge registered"),
    ]:
        label = name
        if key == "peak_rss_MB":
            label += f" ({fit_label(points, key, 100, 'MiB')} per 100 edges)"
        mem_ax.plot(xs, [p.figures[key] for p in points], style, color=color, label=label)
    mem_ax.set_ylabel("central resident memory (MiB)")
    mem_ax.set_title("Central memory vs edges")
    for ax in (cpu_ax, mem_ax):
        ax.set_xlabel(f"edges ({ENGINES} engines each)")
        ax.set_xlim(left=0)
        headroom(ax)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper left", fontsize=9)
    fig.suptitle(f"acefleet-central: cost against fleet size\n{caption}", fontsize=11)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- the run -------------------------------------------------------------------------------
def commit() -> str:
    """HEAD's short hash, and whether the services' code differs from it (shared checkout)."""

    def git(*argv: str) -> str:
        done = subprocess.run(["git", *argv], cwd=REPO, capture_output=True, text=True)
        return done.stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    changed = git("status", "--porcelain", "--", *SERVICES)
    return f"{head} + uncommitted changes" if changed else head


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 points a curve, shorter windows")
    parser.add_argument("--only", choices=["proxy", "central"])
    parser.add_argument(
        "--label", help="the code measured, for the captions (default: git HEAD of this checkout)"
    )
    parser.add_argument("--seconds", type=float, help="proxy measuring window (default 8, quick 5)")
    parser.add_argument(
        "--out",
        type=Path,
        help="where the PNGs go (default bench/results/, with --quick /tmp/acefleet-growth-bench)",
    )
    args = parser.parse_args()
    out = args.out or (Path("/tmp/acefleet-growth-bench") if args.quick else BENCH / "results")
    out.mkdir(parents=True, exist_ok=True)
    seconds = args.seconds or (5.0 if args.quick else 8.0)
    hb_seconds, claim_seconds = (4.0, 5.0) if args.quick else (6.0, 8.0)
    sweep = QUICK if args.quick else {"viewers": VIEWERS, "channels": CHANNELS, "edges": EDGES}
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the proxy inherits it
    proxy_bench.LOGS.mkdir(parents=True, exist_ok=True)

    label = args.label or commit()
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    load_before = os.getloadavg()
    print(
        f"# growth bench at {started}, code {label}, {os.cpu_count()} cpus, "
        f"load average before {' '.join(f'{x:.2f}' for x in load_before)}",
        flush=True,
    )
    t0 = time.monotonic()
    proxy_points: list[Point] = []
    central_points: list[Point] = []
    if args.only != "central":
        for curve in ["viewers", "channels"]:
            proxy_points += uvloop.run(proxy_curve(curve, sweep[curve], seconds))
    if args.only != "proxy":
        for edges in sweep["edges"]:
            try:
                central_points.append(central_point(edges, hb_seconds, claim_seconds))
            except Exception as exc:
                central_points.append(failed("edges", edges, exc))
    load_after = os.getloadavg()
    caption = (
        f"{started}, code {label}, 2-core shared VM, load average "
        f"{load_before[0]:.1f} before / {load_after[0]:.1f} after (1 min)"
    )
    print(
        f"\n# done in {time.monotonic() - t0:.0f} s; load average after "
        f"{' '.join(f'{x:.2f}' for x in load_after)}"
    )
    if proxy_points:
        plot_proxy(proxy_points, out / "growth_proxy.png", caption)
        print(
            f"\n## proxy (window {seconds:g} s, 4 Mbit/s)\n\n{table(proxy_points, PROXY_COLUMNS)}"
            "\n\n* over the whole point (start-up, joins, window); % of one core, machine: of all"
        )
        print(f"\nwrote {out / 'growth_proxy.png'}")
    if central_points:
        plot_central(central_points, out / "growth_central.png", caption)
        print(
            f"\n## central (heartbeats alone {hb_seconds:g} s, then + {CLAIM_RATE:g} claims/s "
            f"for {claim_seconds:g} s)\n\n{table(central_points, CENTRAL_COLUMNS)}"
        )
        print(f"\nwrote {out / 'growth_central.png'}")
    print("\n## slopes (least squares)\n")
    for line in slopes(proxy_points + central_points):
        print(f"- {line}")


if __name__ == "__main__":
    main()
