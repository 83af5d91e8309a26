"""A small run of bench.scenarios.idle_ticks: idle ticks must not grow memory or leak descriptors."""
from __future__ import annotations

import subprocess
import sys

import pytest
from django.conf import settings

RUN_SECONDS = 120


@pytest.mark.timeout(RUN_SECONDS + 60)  # the run's own limit, and the time to start it
def test_idle_ticks_keep_rss_and_descriptors_flat() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bench.scenarios.idle_ticks", "--ticks", "1000", "--runs", "1", "--warmup", "200"],
        cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=RUN_SECONDS,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "fd change 0" in result.stdout and "PASS" in result.stdout
