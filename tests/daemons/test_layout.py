"""The framework's modules import one way: down the layers, never in a circle (see daemons/README.md's layout)."""
from __future__ import annotations

import ast
from pathlib import Path

import daemons

PACKAGE = Path(daemons.__file__).parent
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py") if "migrations" not in path.parts}


def resolve(name: str) -> str | None:
    """The framework module that importing `name` loads: the module itself, or the package it names."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def imports(module: str) -> tuple[set[str], set[str]]:
    """(the framework modules `module` imports, every module name it imports), anywhere in it (at the top
    or inside a function); `from package import name` counts as importing the submodule where there is one."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            submodules = {f"{source}.{alias.name}" for alias in node.names} & MODULES.keys()
            # `from package import submodule` is an import of the submodule; other names come from the package.
            names |= submodules if len(submodules) == len(node.names) else {source, *submodules}
    local = {found for name in names if (found := resolve(name)) is not None and found != module}
    return local, names


GRAPH = {module: imports(module)[0] for module in MODULES}


def in_layer(module: str, name: str) -> bool:
    return module == f"daemons.{name}" or module.startswith(f"daemons.{name}.")


def reach(start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for nxt in GRAPH.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_the_layers_exist_and_the_graph_sees_their_imports() -> None:
    for name in ("process", "cluster", "console", "scheduling", "management"):
        assert f"daemons.{name}" in MODULES, name
    # The check must see real edges, or every rule below passes for nothing.
    assert "daemons.process.runner" in GRAPH["daemons.process.lifecycle"]
    assert "daemons.console.status" in GRAPH["daemons.console.operations"]


def test_the_import_graph_has_no_cycle() -> None:
    cycles = sorted(module for module in GRAPH if module in reach(module))
    assert not cycles, f"import cycles through {cycles}"


def test_process_never_imports_the_console_nor_djangos_management() -> None:
    bad = {module: sorted(name for name in imports(module)[1]
                          if in_layer(resolve(name) or "", "console") or name.startswith("django.core.management"))
           for module in MODULES if in_layer(module, "process")}
    assert not {module: names for module, names in bad.items() if names}


def test_cluster_never_imports_the_console() -> None:
    bad = {module: sorted(found for found in GRAPH[module] if in_layer(found, "console"))
           for module in MODULES if in_layer(module, "cluster")}
    assert not {module: found for module, found in bad.items() if found}


def test_command_error_is_raised_in_management_commands_only() -> None:
    users = sorted(module for module, path in MODULES.items()
                   if not in_layer(module, "management") and "CommandError" in path.read_text())
    assert not users, f"CommandError outside daemons/management: {users}"


def test_no_module_is_over_400_lines() -> None:
    long = {module: n for module, path in MODULES.items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"
