from __future__ import annotations

import pytest

from daemons import Daemon, registry


def test_discovers_daemons_from_installed_apps() -> None:
    assert {"onboarding", "counter", "failing", "slow"} <= set(registry.names())
    assert registry.get("onboarding").__module__ == "customers.daemons"


def test_unknown_name_lists_registered_daemons() -> None:
    with pytest.raises(registry.UnknownDaemon, match=r"unknown daemon 'nope'; registered daemons: .*onboarding"):
        registry.get("nope")


def test_rejects_invalid_and_taken_names() -> None:
    class Bad(Daemon):
        name = "not valid"

    with pytest.raises(ValueError, match="identifier"):
        registry.register(Bad)

    class Clash(Daemon):
        name = "onboarding"

    with pytest.raises(ValueError, match="taken"):
        registry.register(Clash)
