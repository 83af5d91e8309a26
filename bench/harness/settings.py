"""Settings for benchmark runs: the product's settings, plus the peer's glue named by $BENCH_PEER.

Ours runs with these too, so every system carries the same query counter and nothing else:
peers' apps are added only for the peer that needs them.
"""
from __future__ import annotations

import importlib.util
import os
import sys

# An editable install of another checkout (`pip install -e`) leaves a finder on
# sys.meta_path that fills in whatever module this checkout lacks from that one; the
# benchmark measures this checkout alone.
sys.meta_path[:] = [finder for finder in sys.meta_path if getattr(finder, "__name__", "") != "_EditableFinder"]

from signup_site.settings import *  # noqa: E402, F403
from signup_site.settings import INSTALLED_APPS  # noqa: E402

BENCH_PEER = os.environ.get("BENCH_PEER", "")
INSTALLED_APPS = [*INSTALLED_APPS, "bench.peers"]

# The template databases are migrated with every peer's tables, where the peer is installed:
# `make test` runs the quick harness with ours and the floor only, without bench/requirements.txt.
if BENCH_PEER == "dbworker" or (os.environ.get("BENCH_ALL_PEERS") and importlib.util.find_spec("django_tasks_db")):
    INSTALLED_APPS += ["django_tasks", "django_tasks_db"]
    TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}

if BENCH_PEER == "huey":
    from bench.peers.huey_storage import CountingSqliteHuey

    INSTALLED_APPS += ["huey.contrib.djhuey"]
    HUEY = CountingSqliteHuey("bench", filename=os.environ["BENCH_HUEY_FILE"])
