"""scripts/test-env.d/run.py as a module: its directory is no package, so it is loaded from its path."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

RUN_PY = Path(__file__).resolve().parents[2] / "scripts" / "test-env.d" / "run.py"


def run_py() -> ModuleType:
    """A fresh copy of run.py: its environment reader, subreaper and leftover-stopping code."""
    spec = importlib.util.spec_from_file_location("test_env_run", RUN_PY)
    assert spec is not None and spec.loader is not None, RUN_PY
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
