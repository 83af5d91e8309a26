"""The showcase's modules import one way (services never reach up to the daemons that call them) and stay small."""
from __future__ import annotations

import ast
from pathlib import Path

import customers

PACKAGE = Path(customers.__file__).parent
# Past this a module holds more than one job; split it along its seams (as customers/onboarding/ was).
MAX_LINES = 400


def module_name(path: Path) -> str:
    """`path`'s dotted name inside customers: "daemons", "onboarding" (a package), "onboarding.claims"."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py") if "migrations" not in path.parts}


def resolve(name: str) -> str | None:
    """The module `name` (dotted, inside customers) names, or its package; None if it is no customers module."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def local_imports(name: str) -> set[str]:
    """The customers modules module `name` imports, anywhere in it (at the top or inside a function)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".") if package else []
                base = base[: len(base) - (node.level - 1)]
            elif node.module and node.module.split(".")[0] == "customers":
                base = []
            else:
                continue
            module = [*base, *(node.module.split(".") if node.module else [])]
            if node.module and node.module.split(".")[0] == "customers" and not node.level:
                module = module[1:]
            # `from . import x` and `from .pkg import x` may name modules as well as attributes.
            targets = [".".join([*module, alias.name]) for alias in node.names] + [".".join(module)]
            found |= {target for target in map(resolve, targets) if target}
        elif isinstance(node, ast.Import):
            found |= {t for a in node.names if a.name.startswith("customers.") if (t := resolve(a.name[10:]))}
    found.discard(name)
    return found


GRAPH = {name: local_imports(name) for name in MODULES if name}


def reach(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in GRAPH.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_the_import_graph_has_no_cycle_and_services_never_import_the_daemons() -> None:
    services = [name for name in GRAPH if name.split(".")[0] in ("signup", "onboarding", "selectors", "digest",
                                                                  "models")]
    assert "onboarding.claims" in services, "the onboarding package's modules are in the graph"
    for service in services:
        assert "daemons" not in reach(service), f"{service} imports customers.daemons"
    # A package's __init__ re-exports its modules, so it reaches them; none of them may reach it back.
    cycles = [name for name in GRAPH if name in reach(name)]
    assert not cycles, f"import cycles through {cycles}"


def test_the_onboarding_modules_import_each_other_not_their_package() -> None:
    inside = [name for name in GRAPH if name.startswith("onboarding.")]
    assert [name for name in inside if "onboarding" in GRAPH[name]] == []


def test_no_module_is_over_the_line_limit() -> None:
    long = {name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_both_daemons_are_registered_by_the_discovery_of_daemons_py() -> None:
    from daemons import registry

    assert {registry.get(name).__module__ for name in ("onboarding", "digest")} == {"customers.daemons"}
