"""bench.run, the harness of `make bench-quick`, on a tiny N: ours (SQLite, and PostgreSQL when it is
installed) and the stdlib floor, the systems whose dependencies `make test` installs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

HARNESS_SECONDS = 240  # a quick run starts clusters and daemons: minutes on a loaded machine
PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))


def processes_using(paths: list[str]) -> list[int]:
    """PIDs whose command line or environment names one of `paths`."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = (Path(f"/proc/{entry}/cmdline").read_bytes() + Path(f"/proc/{entry}/environ").read_bytes())
        except OSError:
            continue
        if any(path.encode() in text for path in paths):
            found.append(int(entry))
    return found


@pytest.mark.timeout(HARNESS_SECONDS + 60)
def test_quick_harness_measures_every_figure_and_stops_what_it_started(tmp_path: Path) -> None:
    systems = ["ours-sqlite", "floor", "floor-2"] + (["ours-pg"] if (PG_BIN / "initdb").exists() else [])
    result = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--customers", "40", "--rate", "10", "--latency-seconds", "2",
         # Longer than one onboarding interval (5 s), so the idle window always holds a tick's read.
         "--idle-seconds", "6", "--systems", ",".join(systems), "--out", str(tmp_path)],
        cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=HARNESS_SECONDS,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    results = json.loads((tmp_path / "results.json").read_text())
    records = {record["system"]: record for record in results["records"]}
    assert set(records) == set(systems)
    for key, record in records.items():
        assert record["drain_per_s"] > 0 and record["rss_drain_kib"] > record["pss_drain_kib"] > 0, key
    for key in set(systems) - {"floor", "floor-2"}:
        ours = records[key]
        assert ours["signups"] == 20 and 0 < ours["p50_ms"] <= ours["p99_ms"] < 10_000, ours
        assert ours["idle_cpu_s_per_min"] >= 0 and ours["idle_queries_per_min"] > 0 and ours["pss_idle_kib"] > 0
    assert "p50_ms" not in records["floor"] and "p50_ms" not in records["floor-2"]
    [bare] = results["django_setup"]  # the reference for ours' memory, once per repetition
    assert 0 < bare["pss_kib"] < bare["rss_kib"] < records["ours-sqlite"]["rss_drain_kib"], bare

    table = (tmp_path / "results.md").read_text()
    assert "| ours: rundaemon onboarding, SQLite | " in table
    assert "| floor: stdlib sqlite3 + smtplib, one connection | " in table  # in the table and in the ratios
    assert "| floor: stdlib sqlite3 + smtplib, two connections | " in table
    assert table.count("| floor:") == 4
    assert "A bare `django.setup()` of the same settings" in table and "ours' RSS after the drain is " in table
    assert f"{results['machine']['cores']} cores" in table and "Django" in table

    assert not processes_using(results["temp_dirs"]), "the harness left a process behind"
    assert not any(Path(path).exists() for path in results["temp_dirs"])


def test_bad_arguments_get_one_line_and_exit_2() -> None:
    result = subprocess.run([sys.executable, "-m", "bench.run", "--systems", "ours-sqlite,rq"],
                            cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "unknown system rq" in result.stderr and "Traceback" not in result.stderr
