"""Writing a new daemon: its class in the app's daemons.py and a test that passes as generated."""
from __future__ import annotations

import ast
import keyword
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from string import Template

from django.apps import AppConfig, apps

from daemons import registry
from daemons.scheduling import schedule

TEMPLATES = Path(__file__).resolve().parents[1] / "templates" / "daemons" / "makedaemon"
DEFAULT_EVERY = timedelta(seconds=5)

_HEADER = '''"""The daemons of the {app} app: each is run with `manage.py rundaemon NAME`."""
from __future__ import annotations
'''


class GeneratorError(Exception):
    """The daemon can't be generated; the message is one line for the developer."""


@dataclass(frozen=True)
class Generated:
    """What `daemon_plan` will write; `write()` writes it."""

    class_name: str
    app_label: str
    daemons_file: Path
    daemons_source: str
    test_file: Path
    test_source: str
    created_daemons_file: bool

    def write(self) -> None:
        self.daemons_file.write_text(self.daemons_source)
        self.test_file.parent.mkdir(parents=True, exist_ok=True)
        package_init = self.test_file.parent / "__init__.py"
        if not package_init.exists() and (self.test_file.parent.parent / "__init__.py").exists():
            package_init.write_text("")
        self.test_file.write_text(self.test_source)


def class_name_for(name: str) -> str:
    """`nightly_report` -> `NightlyReportDaemon`."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part) + "Daemon"


def check_name(name: str) -> None:
    """Refuse a name that is not an identifier or that a registered daemon already has."""
    if not name.isidentifier() or keyword.iskeyword(name) or not name.strip("_"):
        raise GeneratorError(f"invalid daemon name {name!r}: use a Python identifier such as 'nightly_report'")
    if name in registry.names():
        taken = registry.get(name)
        raise GeneratorError(f"daemon name {name!r} is taken by {taken.__module__}.{taken.__qualname__}")


def in_project(path: Path, base_dir: Path) -> bool:
    """True for code under `base_dir` that is not an installed package (say, in a .venv there)."""
    path = path.resolve()
    installed = {Path(p).resolve() for p in (sys.prefix, sys.base_prefix)}
    return (path.is_relative_to(base_dir) and not any(path.is_relative_to(p) for p in installed)
            and not {"site-packages", "dist-packages"} & set(path.parts))


def project_apps(base_dir: Path) -> list[AppConfig]:
    """Installed apps whose code lives in the project (not the framework, not the tests)."""
    return [config for config in apps.get_app_configs()
            if in_project(Path(config.path), base_dir) and config.name != "daemons"
            and not config.name.startswith("tests.")]


def resolve_app(label: str | None, base_dir: Path) -> AppConfig:
    """The app to write into: `label`, or the project's only app when none is given."""
    candidates = project_apps(base_dir)
    if label is None:
        if len(candidates) == 1:
            return candidates[0]
        names = ", ".join(c.label for c in candidates) or "none"
        raise GeneratorError(f"choose an app with --app; project apps: {names}")
    try:
        config = apps.get_app_config(label)
    except LookupError:
        names = ", ".join(c.label for c in candidates) or "none"
        raise GeneratorError(f"unknown app {label!r}; project apps: {names}") from None
    if not in_project(Path(config.path), base_dir):
        raise GeneratorError(f"app {label!r} is not part of this project ({config.path})")
    return config


def test_path_for(config: AppConfig, name: str, base_dir: Path) -> Path:
    """Where the daemon's test goes, never making a package that would shadow a module.

    tests/<app>/ when the project keeps its tests in a top-level tests/ folder; else the
    app's tests/ package when it has one; else the app itself, beside the `tests.py` that
    startapp writes (a tests/ package there would hide that module from `manage.py test`).
    Both Django's runner (test*.py) and pytest (test_*.py) find the file in each place.
    """
    filename = f"test_{name}_daemon.py"
    if (base_dir / "tests").is_dir():
        return base_dir / "tests" / config.label / filename
    app_dir = Path(config.path)
    if (app_dir / "tests" / "__init__.py").exists():
        return app_dir / "tests" / filename
    return app_dir / filename


def _module_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    return names


def _defined_classes(tree: ast.Module) -> set[str]:
    return {node.name for node in tree.body if isinstance(node, ast.ClassDef)}


def _insert_imports(source: str, tree: ast.Module, lines: list[str]) -> str:
    """Put `lines` after the module's leading imports (or after its docstring)."""
    if not lines:
        return source
    after = 0
    for index, node in enumerate(tree.body):
        # Only the leading block: an import at the bottom (say, of a sibling module) stays last.
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            after = node.end_lineno or node.lineno
        elif index == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            after = node.end_lineno or node.lineno
        else:
            break
    text = source.splitlines(keepends=True)
    block = "".join(f"{line}\n" for line in lines)
    return "".join(text[:after]) + block + "".join(text[after:])


def _render(template: str, **values: object) -> str:
    return Template((TEMPLATES / template).read_text()).substitute(**{k: str(v) for k, v in values.items()})


def daemon_plan(*, name: str, base_dir: Path, app_label: str | None = None,
                every: timedelta | None = None, cron: str | None = None) -> Generated:
    """Work out the daemon class to append to the app's daemons.py and its test; write nothing.

    A taken or invalid name, an existing class or test file, or an unreadable daemons.py
    raises GeneratorError, so nothing is written unless everything can be.
    """
    if every is not None and cron is not None:
        raise GeneratorError("give --every or --cron, not both")
    base_dir = base_dir.resolve()
    check_name(name)
    config = resolve_app(app_label, base_dir)
    class_name = class_name_for(name)
    daemons_file = Path(config.path) / "daemons.py"
    test_file = test_path_for(config, name, base_dir)

    exists = daemons_file.exists()
    source = daemons_file.read_text() if exists else _HEADER.format(app=config.label)
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise GeneratorError(f"cannot read {daemons_file}: {exc.msg} on line {exc.lineno}") from None
    if class_name in _defined_classes(tree):
        raise GeneratorError(f"{daemons_file.relative_to(base_dir)} already defines {class_name}; not overwriting it")
    if test_file.exists():
        raise GeneratorError(f"{test_file.relative_to(base_dir)} exists; not overwriting it")

    if cron is not None:
        schedule.cron(cron)  # raises ValueError for a bad expression
        needed = {"datetime": "datetime", "register": "daemons", "ScheduledDaemon": "daemons.jobs",
                  "job": "daemons.jobs"}
        values = {"cron": cron}
        daemon_template, test_template = "daemon_cron.py-tpl", "test_cron.py-tpl"
    else:
        period = every or DEFAULT_EVERY
        needed = {"datetime": "datetime", "Daemon": "daemons", "TickResult": "daemons", "register": "daemons"}
        values = {"interval": repr(period.total_seconds()), "every_text": schedule.format_interval(period)}
        daemon_template, test_template = "daemon_every.py-tpl", "test_every.py-tpl"
    have = _module_names(tree)
    by_module: dict[str, list[str]] = {}
    for imported, module in needed.items():
        if imported not in have:
            by_module.setdefault(module, []).append(imported)
    missing = [f"from {module} import {', '.join(names)}" for module, names in by_module.items()]
    common = {"name": name, "class_name": class_name, "app": config.label,
              "title": name.replace("_", " ").capitalize(), "module": f"{config.name}.daemons", **values}
    source = _insert_imports(source, tree, missing).rstrip("\n") + "\n\n\n" + _render(daemon_template, **common)

    return Generated(class_name=class_name, app_label=config.label, daemons_file=daemons_file,
                     daemons_source=source, test_file=test_file,
                     test_source=_render(test_template, **common), created_daemons_file=not exists)


def daemon_generate(*, name: str, base_dir: Path, app_label: str | None = None,
                    every: timedelta | None = None, cron: str | None = None) -> Generated:
    """`daemon_plan(...)`, then write it: the daemon class and its test."""
    plan = daemon_plan(name=name, base_dir=base_dir, app_label=app_label, every=every, cron=cron)
    plan.write()
    return plan
