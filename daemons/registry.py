"""The registry of daemons, filled by `@register` in each installed app's `daemons.py`."""
from __future__ import annotations

from typing import TypeVar

from django.utils.module_loading import autodiscover_modules

from daemons.daemon import Daemon

D = TypeVar("D", bound=type[Daemon])

_registry: dict[str, type[Daemon]] = {}


class UnknownDaemon(LookupError):
    def __init__(self, name: str) -> None:
        known = ", ".join(sorted(_registry)) or "none"
        super().__init__(f"unknown daemon {name!r}; registered daemons: {known}")


def register(cls: D) -> D:
    """Class decorator: make `cls` runnable as `manage.py rundaemon <cls.name>`."""
    name = cls.name
    if not name or not name.isidentifier():
        raise ValueError(f"{cls.__qualname__}.name must be a Python identifier, got {name!r}")
    existing = _registry.get(name)
    if existing is not None and existing.__qualname__ != cls.__qualname__:
        raise ValueError(f"daemon name {name!r} is taken by {existing.__module__}.{existing.__qualname__}")
    _registry[name] = cls
    return cls


def get(name: str) -> type[Daemon]:
    try:
        return _registry[name]
    except KeyError:
        raise UnknownDaemon(name) from None


def names() -> list[str]:
    return sorted(_registry)


def autodiscover() -> None:
    """Import `daemons.py` from every installed app, the way the admin imports `admin.py`."""
    autodiscover_modules("daemons")
