"""The showcase's modules import one way: services never reach up to the daemons that call them."""
from __future__ import annotations

import ast
from pathlib import Path

import customers

PACKAGE = Path(customers.__file__).parent


def local_imports(path: Path) -> set[str]:
    """The customers modules `path` imports, anywhere in it (at the top or inside a function)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                base = node.module.split(".")[0] if node.module else None
                found |= {base} if base else {alias.name for alias in node.names}
            elif node.module and node.module.split(".")[0] == "customers":
                parts = node.module.split(".")
                found |= {parts[1]} if len(parts) > 1 else {alias.name for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("customers.")}
    return {name for name in found if (PACKAGE / f"{name}.py").exists()}


def test_the_import_graph_has_no_cycle_and_services_never_import_the_daemons() -> None:
    graph = {path.stem: local_imports(path) for path in PACKAGE.glob("*.py")}
    for service in ("signup", "onboarding", "selectors", "digest", "models"):
        assert "daemons" not in graph[service], f"{service} imports customers.daemons"

    def reach(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    cycles = [name for name in graph if name in reach(name)]
    assert not cycles, f"import cycles through {cycles}"


def test_both_daemons_are_registered_by_the_discovery_of_daemons_py() -> None:
    from daemons import registry

    assert {registry.get(name).__module__ for name in ("onboarding", "digest")} == {"customers.daemons"}
