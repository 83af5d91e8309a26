"""The showcase set up in this process, for scenarios that time its code directly: a fresh SQLite file and the sink."""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.harness import servers
from bench.run import SECRET_KEY


@contextmanager
def showcase(prefix: str) -> Iterator[servers.Server]:
    """Django set up with the benchmark's settings on a fresh, migrated SQLite file, mail going to a started SMTP
    sink (yielded); both are removed afterwards. Import Django's models only inside."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    sink = servers.start_smtp_sink()
    try:
        os.environ.update(DJANGO_SETTINGS_MODULE="bench.harness.settings", DATABASE_URL=f"sqlite:///{tmp}/db.sqlite3",
                          DEBUG="false", SECRET_KEY=SECRET_KEY, EMAIL_URL=f"smtp://127.0.0.1:{sink.port}")
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        yield sink
    finally:
        sink.stop()
        shutil.rmtree(tmp, ignore_errors=True)
