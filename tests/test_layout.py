"""The layout's rules, read from the code's imports (see docs/ARCHITECTURE.md).

Every import counts: module level, inside functions, and under
``if TYPE_CHECKING:`` (a type-only circle is still a circle for a reader).
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONTRACT = ("lunos_proxy.plugin", "lunos_proxy.exchange", "lunos_proxy.views")
MAX_LINES = 400  # past this, a module's docstring says why it is one piece


def _modules(package: str) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def import_graph(package: str) -> dict[str, set[str]]:
    """Each module of `package` -> the names it imports (modules, or the
    package a name was imported from when that name is not a module)."""
    modules = _modules(package)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        here = name.split(".") if is_package else name.split(".")[:-1]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                deps.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here[: len(here) - node.level + 1]
                    source = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    source = node.module or ""
                subs = [f"{source}.{alias.name}" for alias in node.names]
                known = [s for s in subs if s in modules]
                deps.update(known)
                if len(known) < len(subs):
                    deps.add(source)
        deps.discard(name)
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v] & graph.keys()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for dep in graph.get(todo.pop(), set()):
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


def offenders(graph: dict[str, set[str]], bad: Callable[[str, str], bool]) -> list[str]:
    return sorted(
        f"{module} imports {dep}" for module, deps in graph.items() for dep in deps if bad(module, dep)
    )


def test_the_runtime_never_imports_a_plugin() -> None:
    graph = import_graph("lunos_proxy")
    assert offenders(graph, lambda _, dep: dep == "plugins" or dep.startswith("plugins.")) == []


def test_the_runtime_has_no_import_circle() -> None:
    assert cycles(import_graph("lunos_proxy")) == []


def test_the_contract_imports_neither_the_app_nor_the_forwarder() -> None:
    graph = import_graph("lunos_proxy")
    for module in CONTRACT:
        assert module in graph
        below = reachable(graph, module)
        assert {"lunos_proxy.app", "lunos_proxy.forward"} & below == set(), module


def test_only_the_loader_and_the_app_read_plugin_settings() -> None:
    """The rest of the runtime reads a plugin through the views it publishes,
    never its settings found by its name in the pipeline. (The workers'
    parent hands each plugin its settings to preload before forking.)"""
    readers = sorted(
        module
        for module, path in _modules("lunos_proxy").items()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Attribute) and node.attr == "plugin_settings"
    )
    assert set(readers) <= {"lunos_proxy.app", "lunos_proxy.loading", "lunos_proxy.workers"}


def test_plugins_do_not_import_each_other() -> None:
    graph = import_graph("plugins")

    def another(module: str, dep: str) -> bool:
        return dep.startswith("plugins.") and dep.split(".")[1] != module.split(".")[1]

    assert offenders(graph, another) == []


def test_a_module_past_400_lines_says_why_at_its_top() -> None:
    silent = []
    for package in ("lunos_proxy", "plugins"):
        for module, path in _modules(package).items():
            text = path.read_text(encoding="utf-8")
            if text.count("\n") > MAX_LINES:
                doc = ast.get_docstring(ast.parse(text)) or ""
                if f"past {MAX_LINES} lines" not in doc:
                    silent.append(module)
    assert silent == []


def test_the_checks_find_what_they_look_for() -> None:
    """The graph sees every kind of import, and a circle is reported."""
    graph = import_graph("lunos_proxy")
    assert "lunos_proxy.admin" in graph["lunos_proxy.app"]  # inside a function
    assert "lunos_proxy.host" in graph["lunos_proxy.admin.auth"]  # under TYPE_CHECKING
    assert "lunos_proxy.store.gcra" in graph["lunos_proxy.store.memory.limits"]  # from .. import gcra
    looped = {**graph, "lunos_proxy.exchange": graph["lunos_proxy.exchange"] | {"lunos_proxy.app"}}
    assert any("lunos_proxy.app" in group for group in cycles(looped))
