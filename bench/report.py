"""Turns benchmark records into a markdown table, ratios to ours, plots, and the section of docs/performance.md."""
from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import re
import shutil
import sqlite3
import statistics
import subprocess
from pathlib import Path
from typing import Any

from bench.harness.systems import OURS, ROOT

DOCS = ROOT / "docs" / "performance.md"
DOCS_IMG = ROOT / "docs" / "img"
BEGIN, END = "<!-- bench-results:begin -->", "<!-- bench-results:end -->"
PLOTS = {"throughput": "bench-throughput.png", "latency": "bench-latency.png", "memory": "bench-memory.png"}

# (record key, column title, how to show it, True when higher is better)
FIGURES = (
    ("drain_per_s", "drain/s", "{:.0f}", True),
    ("first_onboarded_s", "first email after s", "{:.2f}", False),
    ("queries_per_customer", "queries per customer in drain", "{:.1f}", False),
    ("p50_ms", "p50 ms", "{:.1f}", False),
    ("p99_ms", "p99 ms", "{:.1f}", False),
    ("rss_drain_kib", "RSS after drain MiB", "{:.1f}", False),
    ("pss_drain_kib", "PSS after drain MiB", "{:.1f}", False),
    ("rss_idle_kib", "RSS idle MiB", "{:.1f}", False),
    ("pss_idle_kib", "PSS idle MiB", "{:.1f}", False),
    ("idle_cpu_s_per_min", "idle CPU s/min", "{:.3f}", False),
    ("idle_queries_per_min", "idle queries/min", "{:.0f}", False),
)


def percentiles(latencies_ms: list[float]) -> dict[str, float]:
    """p50, p90 and p99 (nearest rank) of one run's signup-to-onboarded times."""
    ordered = sorted(latencies_ms)

    def rank(p: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]

    return {"p50_ms": rank(50), "p90_ms": rank(90), "p99_ms": rank(99), "signups": len(ordered)}


def _value(record: dict[str, Any], key: str) -> float | None:
    value = record.get(key)
    if value is None:
        return None
    return value / 1024 if key.endswith("_kib") else value


def one_line(record: dict[str, Any]) -> str:
    parts = [f"{record['drain_per_s']:.0f}/s drain"]
    if "p50_ms" in record:
        parts.append(f"p50 {record['p50_ms']:.1f} ms, p99 {record['p99_ms']:.1f} ms")
    parts.append(f"RSS {record['rss_drain_kib'] / 1024:.1f} MiB, PSS {record['pss_drain_kib'] / 1024:.1f} MiB")
    return "; ".join(parts)


def summarize(records: list[dict[str, Any]], systems: dict[str, str]) -> dict[str, dict[str, tuple]]:
    """system -> figure -> (median, min, max) over the runs that measured it."""
    summary: dict[str, dict[str, tuple]] = {}
    for key in systems:
        rows = [r for r in records if r["system"] == key]
        figures = {}
        for figure, *_ in (*FIGURES, ("p90_ms",), ("broker_rss_kib",), ("broker_cpu_s_per_min",)):
            values = [v for r in rows if (v := _value(r, figure)) is not None]
            if values:
                figures[figure] = (statistics.median(values), min(values), max(values))
        summary[key] = figures
    return summary


def _cell(figure: tuple | None, fmt: str, runs: int) -> str:
    if figure is None:
        return "–"
    median, low, high = figure
    text = fmt.format(median)
    return text if runs == 1 else f"{text} ({fmt.format(low)}–{fmt.format(high)})"


def markdown(results: dict[str, Any]) -> str:
    systems = results["systems"]
    runs = results["settings"]["runs"]
    summary = summarize(results["records"], systems)
    s = results["settings"]
    lines = [
        f"Run of {results['started']}: {s['customers']:,} waiting customers per drain, "
        f"{s['rate']:g} signups/s for {s['latency_seconds']:g} s, {s['idle_seconds']:g} s idle; "
        + ("one run." if runs == 1 else f"medians of {runs} runs, min–max in brackets."),
        "",
        "| system | " + " | ".join(title for _, title, _, _ in FIGURES) + " |",
        "|---|" + "---:|" * len(FIGURES),
    ]
    for key, label in systems.items():
        cells = [_cell(summary[key].get(figure), fmt, runs) for figure, _, fmt, _ in FIGURES]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    brokers = [(systems[k], f) for k, f in summary.items() if "broker_rss_kib" in f]
    if brokers:
        lines += ["", "The figures above are the workers' own. Each Celery worker's Redis adds, after idling: "
                  + "; ".join(f"{label.removeprefix('Celery + Redis, ')}: {f['broker_rss_kib'][0]:.1f} MiB RSS and "
                              f"{f['broker_cpu_s_per_min'][0]:.3f} s CPU a minute" for label, f in brokers) + "."]
    if line := django_setup_line(results, summary):
        lines += ["", line]
    for key, reason in results.get("skipped", {}).items():
        lines.append(f"\n{key}: {reason}.")
    if OURS in summary:
        lines += ["", f"Ours ({systems[OURS]}) against each, median against median: "
                  "how many times better ours is (above 1: ours better; below 1: the other better).", "",
                  "| against | " + " | ".join(title for _, title, _, _ in FIGURES) + " |",
                  "|---|" + "---:|" * len(FIGURES)]
        ours = summary[OURS]
        for key, label in systems.items():
            if key == OURS:
                continue
            cells = []
            for figure, _, _, higher_better in FIGURES:
                a, b = ours.get(figure), summary[key].get(figure)
                if a is None or b is None or min(a[0], b[0]) <= 0:
                    cells.append("–")
                else:
                    cells.append(f"{(a[0] / b[0]) if higher_better else (b[0] / a[0]):.2f}×")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def django_setup_line(results: dict[str, Any], summary: dict[str, dict[str, tuple]]) -> str:
    """The reference beside ours' memory: a bare `django.setup()` of the same settings, and ours against it."""
    measured = results.get("django_setup") or []
    if not measured:
        return ""
    rss = statistics.median(m["rss_kib"] for m in measured) / 1024
    pss = statistics.median(m["pss_kib"] for m in measured) / 1024
    line = (f"A bare `django.setup()` of the same settings, in a process that does nothing else: {rss:.1f} MiB RSS "
            f"and {pss:.1f} MiB PSS" + (f" (medians of {len(measured)})" if len(measured) > 1 else ""))
    ours = summary.get(OURS, {}).get("rss_drain_kib")
    if ours:
        line += f"; ours' RSS after the drain is {ours[0] / rss:.2f}× that"
    return line + "."


def plots(results: dict[str, Any], directory: Path) -> list[Path]:
    """Throughput, latency percentiles and memory as PNGs in `directory`; [] without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    systems = results["systems"]
    summary = summarize(results["records"], systems)
    keys = list(systems)
    directory.mkdir(parents=True, exist_ok=True)
    written = []

    def bars(ax: Any, figures: list[tuple[str, str]], unit: str) -> int:
        width = 0.8 / len(figures)
        drawn = 0
        for i, (figure, name) in enumerate(figures):
            xs: list[float] = []
            heights: list[float] = []
            errors: list[list[float]] = [[], []]
            for x, key in enumerate(keys):
                if figure in summary[key]:
                    median, low, high = summary[key][figure]
                    xs.append(x + (i - (len(figures) - 1) / 2) * width)
                    heights.append(median)
                    errors[0].append(median - low)
                    errors[1].append(high - median)
            ax.bar(xs, heights, width, yerr=errors, capsize=3, label=name)
            drawn += len(heights)
        ax.set_xticks(range(len(keys)), keys, rotation=30, ha="right")
        ax.set_ylabel(unit)
        if len(figures) > 1:
            ax.legend()
        return drawn

    for name, title, figures, unit in (
        ("throughput", f"Drain of {results['settings']['customers']:,} waiting customers (higher is better)",
         [("drain_per_s", "customers/s")], "customers onboarded per second"),
        ("latency", f"Signup to onboarded at {results['settings']['rate']:g} signups/s (lower is better)",
         [("p50_ms", "p50"), ("p90_ms", "p90"), ("p99_ms", "p99")], "ms (log scale)"),
        ("memory", "Memory of the worker's process tree (lower is better)",
         [("rss_drain_kib", "RSS after drain"), ("pss_drain_kib", "PSS after drain"),
          ("rss_idle_kib", "RSS idle"), ("pss_idle_kib", "PSS idle")], "MiB"),
    ):
        fig, ax = plt.subplots(figsize=(9, 4.5))
        if not bars(ax, figures, unit):  # no system measured this figure
            plt.close(fig)
            continue
        if name == "latency":
            ax.set_yscale("log")
        ax.set_title(title)
        fig.tight_layout()
        path = directory / PLOTS[name]
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def machine() -> dict[str, Any]:
    meminfo = Path("/proc/meminfo").read_text().split()
    return {
        "cores": os.cpu_count(), "memory_gib": round(int(meminfo[meminfo.index("MemTotal:") + 1]) / 1024 ** 2, 1),
        "cpu": next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name")), platform.machine()),
        "kernel": platform.release(), "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def versions(servers: list[Any]) -> dict[str, str]:
    found = {"python": platform.python_version(), "sqlite": sqlite3.sqlite_version}
    for package in ("Django", "celery", "kombu", "redis", "huey", "django-tasks", "django-tasks-db", "aiosmtpd",
                    "psycopg"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    for server in servers:
        if server.version:
            found[server.name] = server.version
    redis = shutil.which("redis-server")
    if redis:
        words = subprocess.run([redis, "--version"], capture_output=True, text=True).stdout.split()
        found["redis-server"] = next((w[2:] for w in words if w.startswith("v=")), "")
    return found


def header(results: dict[str, Any]) -> str:
    m = results["machine"]
    v = ", ".join(f"{k} {val}" for k, val in results["versions"].items())
    load = m["load_average_at_start"]
    # Load left over from anything else running: above half the cores, the figures are lower bounds.
    shared = " The machine was shared with other work during this run." if load[0] > m["cores"] / 2 else ""
    return (f"Machine: {m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, Linux {m['kernel']}; "
            f"load average at start {', '.join(map(str, load))}.{shared} "
            f"Date: {results['started'][:10]}. Versions: {v}.\n")


def write(results: dict[str, Any], out: Path, *, docs: bool = False) -> dict[str, Path]:
    """Write results.json and results.md (and the plots) under `out`; with `docs`, update docs/ too."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "markdown": out / "results.md"}
    paths["json"].write_text(json.dumps(results, indent=1) + "\n")
    table = markdown(results)
    pictures = plots(results, DOCS_IMG if docs else out)
    prefix = "img/" if docs else ""
    images = "".join(f"\n![{p.stem}]({prefix}{p.name})\n" for p in pictures)
    section = f"{header(results)}\n{table}{images}"
    paths["markdown"].write_text(section)
    if docs:
        text = DOCS.read_text()
        pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
        block = f"{BEGIN}\n{section}{END}"
        DOCS.write_text(pattern.sub(lambda _: block, text) if pattern.search(text) else f"{text}\n{block}\n")
        paths["docs"] = DOCS
    for i, picture in enumerate(pictures):
        paths[f"plot{i}"] = picture
    return paths
