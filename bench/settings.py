"""Settings for benchmark runs: the product's settings, plus the peer's glue named by $BENCH_PEER.

Ours runs with these too, so every system carries the same query counter and nothing else:
peers' apps are added only for the peer that needs them.
"""
from __future__ import annotations

import os

from signup_site.settings import *  # noqa: F401,F403
from signup_site.settings import INSTALLED_APPS

BENCH_PEER = os.environ.get("BENCH_PEER", "")
INSTALLED_APPS = [*INSTALLED_APPS, "bench.peers"]

if BENCH_PEER == "dbworker" or os.environ.get("BENCH_ALL_PEERS"):
    INSTALLED_APPS += ["django_tasks", "django_tasks_db"]
    TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}

if BENCH_PEER == "huey":
    from bench.peers.huey_storage import CountingSqliteHuey

    INSTALLED_APPS += ["huey.contrib.djhuey"]
    HUEY = CountingSqliteHuey("bench", filename=os.environ["BENCH_HUEY_FILE"])
