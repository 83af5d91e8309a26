"""`make test`'s environment (scripts/test-env.d/run.py): a cluster of its own, and nothing left behind."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import BASE_DIR, default_signals, wait_for
from tests.support.processes import alive

# Two runs, each starting a cluster, and waits of up to 90 s for each suite and 60 s for each end.
pytestmark = [pytest.mark.process, pytest.mark.timeout(420)]

RUN_PY = BASE_DIR / "scripts" / "test-env.d" / "run.py"

# Stands in for pytest: uses the cluster, writes a temporary file, leaves a detached process running
# (as a daemon a test forgot would be), then exits with the given status or waits for Ctrl-C.
SUITE = """
import json, os, subprocess, sys, tempfile, time
from pathlib import Path
import psycopg

report, outcome = Path(sys.argv[1]), sys.argv[2]
with psycopg.connect(os.environ["TEST_PG_URL"]) as conn:
    assert conn.execute("SELECT 1").fetchone() == (1,)
pg_dir = Path(os.environ["TEST_PG_DIR"])
forgotten = subprocess.Popen(["sleep", "600"], start_new_session=True, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
report.with_suffix(".part").write_text(json.dumps({
    "run_dir": os.environ["TEST_ENV_DIR"], "tmp_file": tempfile.mkstemp()[1], "pg_dir": str(pg_dir),
    "sqlite": os.environ["TEST_SQLITE_PATH"], "url": os.environ["TEST_PG_URL"],
    "postmaster": int((pg_dir / "data" / "postmaster.pid").read_text().split()[0]), "forgotten": forgotten.pid,
}))
report.with_suffix(".part").rename(report)
if outcome == "wait":
    time.sleep(600)
sys.exit(int(outcome))
"""


def run_env(directory: Path, outcome: str, preexec_fn: Callable[[], None] = default_signals,
            **env: str) -> subprocess.Popen:
    """run.py around SUITE, in a process group of its own as a terminal's job, with a private TMPDIR.

    SUITE writes its report to directory/report.json.
    """
    (directory / "tmp").mkdir(parents=True)
    # The outer run's own environment (when this test runs under make test) must not leak in.
    base = {k: v for k, v in os.environ.items() if not k.startswith(("TEST_ENV_DIR", "TEST_PG_", "KEEP_TEST_PG"))}
    return subprocess.Popen(
        [sys.executable, str(RUN_PY), sys.executable, "-c", SUITE, str(directory / "report.json"), outcome],
        env={**base, "TMPDIR": str(directory / "tmp"), **env}, cwd=BASE_DIR, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, process_group=0, preexec_fn=preexec_fn,
    )


def processes_of(run_dir: str) -> list[int]:
    """Live processes that inherited the run's environment: everything the run started, where it went."""
    marker = f"TEST_ENV_DIR={run_dir}".encode() + b"\0"
    found = []
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and marker in Path(f"/proc/{entry}/environ").read_bytes() and alive(int(entry)):
                found.append(int(entry))
        except OSError:
            pass
    return found


@pytest.fixture(autouse=True)
def _kill_what_the_run_left(tmp_path: Path) -> Iterator[None]:
    """When the test fails because the run left something behind, it is removed here."""
    yield
    for report_path in tmp_path.glob("*/report.json"):
        report = json.loads(report_path.read_text())
        for pid in (report["postmaster"], report["forgotten"]):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(report["pg_dir"], ignore_errors=True)
        shutil.rmtree(report["run_dir"], ignore_errors=True)


def finish(run: subprocess.Popen) -> tuple[int, str]:
    try:
        output, _ = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.communicate()
    return run.returncode, output


# What the run's parts name what they make (run.py's directory, postgres.sh's cluster, which once lived in
# /var/tmp): anything else new in /var/tmp is another process's.
RUN_MADE = ("dktest-", "daemonkit-")


def var_tmp_ours() -> set[str]:
    """The entries of /var/tmp that a test run could have made."""
    return {name for name in os.listdir("/var/tmp") if name.startswith(RUN_MADE)}


def assert_nothing_left(directory: Path, report: dict, var_tmp_before: set[str]) -> None:
    assert not alive(report["postmaster"]), "the PostgreSQL server outlived the run"
    assert not alive(report["forgotten"]), "a detached process outlived the run"
    assert processes_of(report["run_dir"]) == []
    assert not Path(report["run_dir"]).exists()
    assert not Path(report["pg_dir"]).exists()
    assert not Path(report["tmp_file"]).exists()
    assert list((directory / "tmp").iterdir()) == []
    assert var_tmp_ours() <= var_tmp_before


def test_a_failing_run_uses_its_own_cluster_and_leaves_nothing_behind(tmp_path) -> None:
    var_tmp_before = var_tmp_ours()
    code, output = finish(run_env(tmp_path / "run", "3"))
    assert code == 3, output
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert Path(report["tmp_file"]).is_relative_to(report["run_dir"]), "TMPDIR is not the run's directory"
    assert Path(report["sqlite"]).is_relative_to(report["run_dir"]), "the SQLite test database is shared"
    assert f"stopped what the run left running: {report['forgotten']} (sleep)" in output
    assert_nothing_left(tmp_path / "run", report, var_tmp_before)


def test_two_runs_at_once_share_nothing_and_ctrl_c_leaves_nothing_behind(tmp_path) -> None:
    var_tmp_before = var_tmp_ours()
    runs = {name: run_env(tmp_path / name, "wait") for name in ("one", "two")}
    try:
        for name, run in runs.items():
            report = tmp_path / name / "report.json"
            wait_for(lambda report=report, run=run: report.exists() or run.poll() is not None, timeout=90,
                     message=f"run {name} to start its suite")
            assert run.poll() is None, run.communicate()[0]
        reports = {name: json.loads((tmp_path / name / "report.json").read_text()) for name in runs}
        for key in ("url", "pg_dir", "postmaster", "run_dir", "sqlite"):
            assert reports["one"][key] != reports["two"][key], key
        for run in runs.values():
            os.killpg(run.pid, signal.SIGINT)  # Ctrl-C
    finally:
        outcomes = {name: finish(run) for name, run in runs.items()}
    for name, (code, output) in outcomes.items():
        assert code != 0, output
        assert_nothing_left(tmp_path / name, reports[name], var_tmp_before)


def as_a_background_job() -> None:
    """`preexec_fn`: SIGINT ignored, as a shell starts `make test &`; SIGTERM does its default."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def test_a_background_run_stops_on_sigterm_and_leaves_nothing_behind(tmp_path) -> None:
    var_tmp_before = var_tmp_ours()
    run = run_env(tmp_path / "run", "wait", preexec_fn=as_a_background_job)
    report_path = tmp_path / "run" / "report.json"
    try:
        wait_for(lambda: report_path.exists() or run.poll() is not None, timeout=90, message="the suite to start")
        assert run.poll() is None, run.communicate()[0]
        run.terminate()  # `kill %1`: to run.py alone; the suite ignores the SIGINT it would pass on
    finally:
        code, output = finish(run)
    assert code != 0, output
    assert_nothing_left(tmp_path / "run", json.loads(report_path.read_text()), var_tmp_before)


def test_keep_test_pg_keeps_the_stopped_clusters_data(tmp_path) -> None:
    code, output = finish(run_env(tmp_path / "run", "0", KEEP_TEST_PG="1"))
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert code == 0, output
    assert (Path(report["pg_dir"]) / "data" / "PG_VERSION").exists()
    assert f"kept the test cluster's data in {report['pg_dir']}/data" in output
    assert not alive(report["postmaster"])
    assert not Path(report["run_dir"]).exists()
