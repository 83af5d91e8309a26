from __future__ import annotations

import importlib

from django.apps import AppConfig
from django.conf import settings

# Which module defines the tasks of each peer; imported at start-up so workers and
# producers register them the way their users' projects do.
TASK_MODULES = {
    "dbworker": "bench.peers.dbworker",
    "huey": "bench.peers.huey_tasks",
    "celery": "bench.peers.celery_app",
}


class PeersConfig(AppConfig):
    name = "bench.peers"
    label = "bench_peers"

    def ready(self) -> None:
        from django.db.backends.signals import connection_created

        from .counter import count_queries

        connection_created.connect(count_queries)
        # bench.harness.settings defines BENCH_PEER; the type checker reads the test settings, which don't.
        peer = getattr(settings, "BENCH_PEER", "").split("-")[0]
        if peer in TASK_MODULES:
            importlib.import_module(TASK_MODULES[peer])
