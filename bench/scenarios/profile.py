"""Where ours spends a drain: `rundaemon onboarding --once` under py-spy, on the benchmark's set-up.

    .venv/bin/python -m bench.scenarios.profile [--customers 2000] [--database sqlite|postgresql] [--idle]

Seeds N waiting customers, sends through the SMTP sink, samples the daemon's main thread
with py-spy (wall time: waits on the mail server and the database count, as they do for
the drain rate) and prints the share spent in each part of the work. With --idle it
samples the CPU of every thread of a daemon with nothing to do, for 30 s, instead.
The raw stacks are kept in var/bench/profile-*.txt for a flame graph.
"""
from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.harness.systems import BY_KEY, ROOT
from bench.run import Bench, parse_args

# Inclusive shares: a sample counts for every part with a frame on its stack.
# Each part: (path fragment, function name pattern matched against the unqualified name).
PARTS = (
    ("django start-up (django.setup, imports, checks)", ("django/__init__.py", "setup")),
    ("the tick (Runner.tick)", ("daemons/process/runner.py", "tick")),
    ("claiming (customers_claim)", ("customers/onboarding/claims.py", "customers_claim")),
    ("rendering the templates (welcome_email)", ("customers/onboarding/welcome.py", "welcome_email")),
    ("building the MIME message (EmailMessage.message)", ("django/core/mail/message.py", "message")),
    ("SMTP conversation (smtplib, all of it)", ("smtplib.py", ".*")),
    ("SMTP connect and quit (backend open/close)", ("django/core/mail/backends/smtp.py", "open|close")),
    ("recording (customer_onboarding_complete)", ("customers/onboarding/records.py", "customer_onboarding_complete")),
    ("SQL statements (any)", ("django/db/backends/utils.py", "_execute")),
    ("commits", ("django/db/backends/base/base.py", "commit")),
    ("renewing claims (claims_renew)", ("customers/onboarding/claims.py", "claims_renew")),
    ("logging", ("logging/__init__.py", "handle")),
    ("watch thread (heartbeats, stop checks)", ("daemons/process/watch.py", ".*")),
)
FRAME = re.compile(r"(?P<function>.*) \((?P<path>.*?)(?::\d+)?\)$")


def shares(stacks: Path, main_thread_only: bool) -> tuple[int, list[tuple[str, float]], list[tuple[str, float]]]:
    """Samples in `stacks` (py-spy raw), each part's inclusive share and the top self-time functions."""
    total = 0
    parts: collections.Counter[str] = collections.Counter()
    leaf: collections.Counter[str] = collections.Counter()
    for line in stacks.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [match for frame in stack.split(";") if (match := FRAME.match(frame))]
        if main_thread_only and not any(f["path"].endswith("manage.py") for f in frames):
            continue
        total += count
        for name, (path, function) in PARTS:
            if any(path in f["path"] and re.fullmatch(function, f["function"].rpartition(".")[2]) for f in frames):
                parts[name] += count
        if frames:
            leaf[f"{frames[-1]['function']} ({frames[-1]['path']})"] += count
    total = total or 1
    return (total, [(name, 100 * parts[name] / total) for name, _ in PARTS],
            [(name, 100 * count / total) for name, count in leaf.most_common(15)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--idle", action="store_true", help="sample an idle daemon for 30 s instead")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples a second")
    options = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    system = BY_KEY["ours-pg" if options.database == "postgresql" else "ours-sqlite"]
    args = parse_args(["--customers", str(options.customers), "--systems", system.key])
    workdir = Path(tempfile.mkdtemp(prefix="bench-profile-"))
    bench = Bench(args, [system], workdir)
    out = ROOT / "var" / "bench" / f"profile-{'idle' if options.idle else 'drain'}-{options.database}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        bench.start_servers()
        directory = workdir / "run"
        directory.mkdir()
        env = bench.base_env(system, directory, "")
        env["DATABASE_URL"] = bench.database(system, directory, 0)
        if options.idle:
            # CPU only (py-spy drops samples of sleeping threads), every thread.
            command = [*system.command]
            spy = [py_spy, "record", "--duration", "30"]
        else:
            # Wall time of the main thread, waits on SMTP and SQLite included: that is what
            # sets the drain rate.
            bench.driver(env, "seed", str(options.customers), timeout=600)
            command = [*system.command, "--once"]
            spy = [py_spy, "record", "--idle"]
        run = subprocess.run([*spy, "--rate", str(options.rate), "--format", "raw", "--output", str(out),
                              "--subprocesses", "--", *command], cwd=ROOT, env=env, capture_output=True, text=True)
        if run.returncode != 0 and not out.exists():
            print(f"profile: py-spy failed: {run.stderr.strip()[-500:]}", file=sys.stderr)
            return 1
    finally:
        bench.close()
        shutil.rmtree(workdir, ignore_errors=True)
    total, parts, leaves = shares(out, main_thread_only=not options.idle)
    what = "CPU, all threads" if options.idle else "wall time, main thread"
    print(f"{total} samples at {options.rate}/s = {total / options.rate:.1f} s ({what}); raw stacks: {out}")
    print("inclusive share of samples:")
    for name, share in parts:
        print(f"  {share:5.1f} %  {name}")
    print("functions on top of the stack:")
    for name, share in leaves:
        print(f"  {share:5.1f} %  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
