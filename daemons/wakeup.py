"""`daemons.cluster.wakeup` under its earlier name, kept so that imports of `daemons.wakeup` keep working."""
from __future__ import annotations

from daemons.cluster.wakeup import (
    MAX_SOCKET_PATH,
    bind,
    wake,
)

__all__ = [
    "bind", "MAX_SOCKET_PATH", "wake",
]
