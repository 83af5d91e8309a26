"""Daemon Kit for Django: daemons that are management commands."""
from __future__ import annotations

from . import reporting
from .base import Control, Daemon, TickResult
from .registry import register
from .wakeup import wake

__all__ = ["Control", "Daemon", "TickResult", "register", "reporting", "wake"]
