"""One daemon whose work logs to `shop.work`, a logger the project never configured (as adopting.md §5 has it)."""
from __future__ import annotations

import logging
import os
from datetime import datetime

from daemons import Daemon, TickResult, register

work = logging.getLogger("shop.work")


@register
class WorkDaemon(Daemon):
    name = "work"
    interval = float(os.environ.get("TESTAPP_INTERVAL", "5"))

    def tick(self, now: datetime) -> TickResult:
        work.info("worked on the shop's rows")
        work.debug("the details of the shop's rows")
        return TickResult(processed=1)
