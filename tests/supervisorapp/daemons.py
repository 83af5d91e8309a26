"""A daemon whose setup() raises while $SUPERVISORAPP_FAIL_SETUP is set: a start-up failure on demand."""
from __future__ import annotations

import os
from datetime import datetime

from daemons import Daemon, TickResult, register


@register
class FragileDaemon(Daemon):
    name = "fragile"
    interval = float(os.environ.get("TESTAPP_INTERVAL", "5"))

    def setup(self) -> None:
        if os.environ.get("SUPERVISORAPP_FAIL_SETUP"):
            raise RuntimeError("the fragile daemon failed to set up on purpose")

    def tick(self, now: datetime) -> TickResult:
        return TickResult()
