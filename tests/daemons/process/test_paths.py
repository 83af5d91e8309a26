"""The one `{name}.{instance}` rule, as PID file, log, wake-up socket and instance listing see it."""
from __future__ import annotations

from pathlib import Path

from daemons.process.paths import RunPaths, instances, socket_paths


def test_instance_zero_has_the_plain_name_others_a_number(settings, tmp_path: Path) -> None:
    settings.DAEMONS_RUN_DIR = str(tmp_path / "run")
    settings.DAEMONS_LOG_DIR = str(tmp_path / "log")
    assert RunPaths.for_daemon("mail") == RunPaths(tmp_path / "run/mail.pid", tmp_path / "log/mail.log",
                                                   tmp_path / "run/mail.sock")
    assert RunPaths.for_daemon("mail", 7).pid == tmp_path / "run/mail.7.pid"


def test_listings_read_back_exactly_the_names_the_rule_writes(settings, tmp_path: Path) -> None:
    settings.DAEMONS_RUN_DIR = str(tmp_path)
    for instance in (0, 3, 12):
        paths = RunPaths.for_daemon("mail", instance)
        paths.pid.touch()
        paths.socket.touch()
    # Not ours: another daemon whose name starts the same, a zero-padded or a non-numeric middle.
    for name in ("mail.0.pid", "mail.03.pid", "mail.x.pid", "mailer.pid", "mailer.2.sock", "mail.0.sock"):
        (tmp_path / name).touch()
    assert instances("mail") == [0, 3, 12]
    assert socket_paths("mail") == [RunPaths.for_daemon("mail", i).socket for i in (0, 3, 12)]
    assert instances("nobody") == [0] and socket_paths("nobody") == []
