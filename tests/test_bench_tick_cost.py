"""A small run of bench.scenarios.tick_cost: the scenario behind docs/performance.md's per-change figures still runs."""
from __future__ import annotations

import subprocess
import sys

import pytest
from django.conf import settings

RUN_SECONDS = 120


@pytest.mark.timeout(RUN_SECONDS + 60)
def test_the_tick_cost_scenario_onboards_every_customer_at_each_concurrency() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.scenarios.tick_cost", "--customers", "20", "--runs", "1",
         "--concurrency", "1", "2"],
        cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=RUN_SECONDS,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line.split() for line in result.stdout.splitlines()[2:]]
    assert [row[0] for row in rows] == ["1", "2"], result.stdout
    assert all(float(value) > 0 for row in rows for value in row[1:]), result.stdout
