"""README's "Sign up and watch onboarding happen", walked: every command of its steps, as written, in a fresh
copy of the project, each but `make run` from another terminal (none of make run's variables)."""
from __future__ import annotations

import fcntl
import os
import re
import select
import shutil
import signal
import sqlite3
import subprocess
import termios
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import BASE_DIR, default_signals, wait_for
from tests.project_copy import ProjectCopy, copy_project, terminal_env
from tests.test_make_run import ctrl_c, page, start_make_run, stop_leftovers
from tests.webserver import Server

pytestmark = pytest.mark.process

README = BASE_DIR / "README.md"
SECTION = "Sign up and watch onboarding happen"
# A fenced block (indented in a list item) or an inline code span.
CODE = re.compile(r"^[ \t]*```[^\n]*\n(.*?)^[ \t]*```|`([^`\n]+)`", re.S | re.M)
STEP = re.compile(r"^\d+\. ")


@dataclass(frozen=True)
class Command:
    line: str
    # The comment lines under it in its block: what the README says it prints.
    shows: tuple[str, ...] = ()


def steps() -> str:
    """The numbered steps of the section: from its first item to the first paragraph that is not in the list."""
    text = README.read_text()
    start = text.index(f"## {SECTION}\n")
    end = text.find("\n## ", start + 1)
    lines, in_list = [], False
    for line in text[start:end if end != -1 else None].splitlines()[1:]:
        if STEP.match(line):
            in_list = True
        elif in_list and line and not line[0].isspace():
            break
        if in_list:
            lines.append(line)
    return "\n".join(lines)


def is_command(text: str, root: Path) -> bool:
    """A code span is a command when its first word is a program: on PATH, or an executable file of the project."""
    word = text.split()[0]
    return shutil.which(word) is not None or ((root / word).is_file() and os.access(root / word, os.X_OK))


def commands(root: Path) -> list[Command]:
    """Every command of the steps, in order, with what its block's comments say it shows."""
    found = []
    for block, span in CODE.findall(steps()):
        if span:
            if is_command(span, root):
                found.append(Command(span.strip()))
            continue
        lines = [line.strip() for line in block.splitlines() if line.strip()]
        for index, line in enumerate(lines):
            if not line.startswith("#") and is_command(line, root):
                shows = []
                for comment in lines[index + 1:]:
                    if not comment.startswith("#"):
                        break
                    shows.append(comment.lstrip("# "))
                found.append(Command(line, tuple(shows)))
    return found


def test_the_steps_show_the_commands_the_issue_names(tmp_path: Path) -> None:
    lines = [command.line for command in commands(copy_project(tmp_path / "project").root)]
    assert lines[0] == "make run", lines
    for expected in ("tail -f var/log/onboarding.log", "manage.py daemonstatus", "manage.py createsuperuser",
                     "manage.py stopdaemon", "manage.py rundaemon onboarding --once"):
        assert any(expected in line for line in lines), (expected, lines)
    # Names, variables and paths in code spans are not mistaken for commands.
    assert not any(line.split()[0] in ("EMAIL_URL", "SECRET_KEY", "DEBUG=1", ".env", "var/mail/") for line in lines)


def sign_up(make: subprocess.Popen, port: int, name: str, email: str) -> None:
    """What a visitor does on the page make run serves: the form, posted with its CSRF token."""
    site = Server(port, process=make, log=Path(os.devnull))
    token = site.csrf_token()
    body = urllib.parse.urlencode({"csrfmiddlewaretoken": token, "name": name, "email": email}).encode()
    response = site.request("POST", "/", body=body, headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status == 302, response.text[:500]


def follow(project: ProjectCopy, command: Command, env: dict[str, str]) -> None:
    """A `tail -f`: it must show the line its comment shows (less the time and PID of that run), then is stopped."""
    [shown] = command.shows
    expected = re.sub(r"^.*?pid=\d+ ", "", shown)
    expected = re.sub(r" in \d+ ms", " in ", expected).split(" in ")[0]
    process = subprocess.Popen(["bash", "-c", command.line], cwd=project.root, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, process_group=0, preexec_fn=default_signals)
    assert process.stdout is not None
    seen: list[str] = []
    try:
        os.set_blocking(process.stdout.fileno(), False)

        def shown_yet() -> bool:
            seen.extend(process.stdout.readlines())  # type: ignore[union-attr]
            return any(expected in line for line in seen) or process.poll() is not None

        wait_for(shown_yet, timeout=60, message=f"{command.line} to show {expected!r}")
        assert any(expected in line for line in seen), "".join(seen)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
        process.stdout.close()


def in_a_terminal(project: ProjectCopy, line: str, env: dict[str, str], answers: list[tuple[str, str]]) -> str:
    """Run `line` with a terminal of its own (as a person types it), answering each prompt; all it printed.

    An interactive command run without a terminal may do nothing (createsuperuser skips then), so a pipe
    proves nothing.
    """
    primary, secondary = os.openpty()

    def take_the_terminal() -> None:
        default_signals()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    process = subprocess.Popen(["bash", "-c", line], cwd=project.root, env={**env, "TERM": "dumb"},
                               stdin=secondary, stdout=secondary, stderr=secondary, start_new_session=True,
                               preexec_fn=take_the_terminal)
    os.close(secondary)
    output, pending = "", list(answers)
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([primary], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(primary, 4096).decode(errors="replace")
                except OSError:  # the command closed the terminal: it has finished
                    break
                if not chunk:
                    break
                output += chunk
                while pending and pending[0][0] in output.rsplit("\n", 1)[-1]:
                    os.write(primary, pending.pop(0)[1].encode() + b"\n")
                    output += "\n"
            elif process.poll() is not None:
                break
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(primary)
    assert process.returncode == 0, output
    assert not pending, f"never asked {pending[0][0]!r}:\n{output}"
    return output


def onboarded(project: ProjectCopy, email: str) -> bool:
    with sqlite3.connect(project.root / "var" / "db.sqlite3") as db:
        row = db.execute("SELECT onboarded_at FROM customers_customer WHERE email = ?", (email,)).fetchone()
    return bool(row and row[0])


@pytest.mark.timeout(600)
def test_every_command_of_the_steps_works_as_written(tmp_path: Path) -> None:
    project = copy_project(tmp_path / "project")
    terminal = terminal_env()
    make = None
    try:
        for command in commands(project.root):
            words = command.line.split()
            if command.line == "make run":
                assert make is None, "make run is shown twice: the walk would start a second one"
                make, port = start_make_run(project.root, terminal)
                sign_up(make, port, "Ada Lovelace", "ada@example.com")  # "open http://127.0.0.1:8000/ and sign up"
            elif words[:2] == ["tail", "-f"]:
                follow(project, command, terminal)
            elif "createsuperuser" in words:
                password = "walk-the-readme-" + os.urandom(8).hex()
                output = in_a_terminal(project, command.line, terminal, [
                    ("Username", "admin"), ("Email address", "admin@example.com"),
                    ("Password:", password), ("Password (again)", password)])
                assert "Superuser created successfully." in output, output
                with sqlite3.connect(project.root / "var" / "db.sqlite3") as db:
                    assert db.execute("SELECT is_superuser, is_staff FROM auth_user WHERE username = 'admin'"
                                      ).fetchone() == (1, 1)
            else:
                if "--once" in words:  # someone signs up while the daemons are stopped: one pass onboards them
                    assert make is not None, "a step runs before make run"
                    sign_up(make, port, "Grace Hopper", "grace@example.com")
                    assert not onboarded(project, "grace@example.com")
                result = subprocess.run(["bash", "-c", command.line], cwd=project.root, env=terminal,
                                        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
                                        preexec_fn=default_signals)
                assert result.returncode == 0, f"{command.line}\n{result.stdout}{result.stderr}"
                if "daemonstatus" in words:
                    assert re.search(r"^onboarding\s.*running", result.stdout, re.M), result.stdout
                if "stopdaemon" in words:
                    assert not list((project.root / "var" / "run").glob("*.pid")), result.stdout
                if "--once" in words:
                    assert onboarded(project, "grace@example.com"), result.stderr
        assert make is not None, "the steps never ran make run"
        assert onboarded(project, "ada@example.com")
        assert len(list((project.root / "var" / "mail").iterdir())) >= 2, "the welcome emails were not written"
        output = ctrl_c(make)
        assert page(port) is None, output
        assert not list((project.root / "var" / "run").glob("*.pid")), output
    finally:
        if make is not None:
            stop_leftovers(make, project.root / "var" / "run")
