"""A one-minute chaos run (bench/chaos.py): the onboarding promise holds through random faults."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import BASE_DIR, default_signals

pytestmark = pytest.mark.process


@pytest.mark.timeout(900)
def test_a_minute_of_faults_loses_no_customer_and_duplicates_only_with_one_message_id(tmp_path: Path) -> None:
    out = tmp_path / "chaos"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "DJANGO_"))}
    run = subprocess.run([sys.executable, "-m", "bench.chaos", "--seconds", "60", "--drain", "300", "--out", str(out)],
                         cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=840,
                         stdin=subprocess.DEVNULL, preexec_fn=default_signals)
    assert (out / "report.json").exists(), run.stdout + run.stderr
    report = json.loads((out / "report.json").read_text())
    detail = run.stdout[-4000:] + run.stderr[-4000:]
    assert report["customers"] > 300, detail  # about 20 signups a second came through the site
    assert sum(report["faults"].values()) >= 5, detail
    assert report["lost"] == 0, detail
    assert report["duplicate_rows"] == 0, detail
    assert report["duplicate_emails_distinct_ids"] == 0, detail
    assert report["duplicate_emails"] <= report["duplicate_budget"], detail
    assert report["left_running"] == [], detail
    assert report["broken"] == [], detail
    assert run.returncode == 0, detail
    assert (out / "report.txt").read_text().startswith("chaos run: 60 s of faults")
