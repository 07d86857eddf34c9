"""docs/logging.md lists exactly the log events the code writes, with their levels and fields."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

from lunos_proxy.logs import LIBRARY_EVENT

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("lunos_proxy", "plugins")
_LEVELS = {"debug", "info", "warning", "error", "exception", "critical"}
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_ROW = re.compile(r"^\| `([a-z0-9_]+)` \| ([^|]+) \| ([^|]+) \|")


@dataclass
class Event:
    levels: set[str] = field(default_factory=set)
    fields: set[str] = field(default_factory=set)
    open_fields: bool = False  # written with **fields: checked by its own test


def _level(call: ast.Call) -> str | None:
    """The level of a logging call (`log.warning("event", ...)`), "" for
    `getattr(log, level)("event", ...)` and `lines.log_record("event", level, record)`,
    None for any other call."""
    func = call.func
    if isinstance(func, ast.Attribute) and func.attr in _LEVELS:
        return "error" if func.attr == "exception" else func.attr
    if isinstance(func, ast.Call) and isinstance(func.func, ast.Name) and func.func.id == "getattr":
        return ""
    if isinstance(func, ast.Attribute) and func.attr == "log_record":  # RecordWriter
        return ""
    return None


def events_in_code() -> dict[str, Event]:
    found: dict[str, Event] = {}
    for base in SOURCES:
        for path in sorted((ROOT / base).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
                if not isinstance(node, ast.Call) or not node.args:
                    continue
                level, first = _level(node), node.args[0]
                if level is None or not isinstance(first, ast.Constant):
                    continue
                if not (isinstance(first.value, str) and _NAME.match(first.value)):
                    continue
                event = found.setdefault(first.value, Event())
                if level:
                    event.levels.add(level)
                if isinstance(node.func, ast.Attribute) and node.func.attr == "exception":
                    event.fields.add("exception")
                for kw in node.keywords:
                    if kw.arg is None:
                        event.open_fields = True
                    else:
                        event.fields.add("exception" if kw.arg == "exc_info" else kw.arg)
    return found


def catalogue() -> dict[str, tuple[set[str], set[str]]]:
    rows = {}
    for line in (ROOT / "docs" / "logging.md").read_text(encoding="utf-8").splitlines():
        m = _ROW.match(line)
        if m:
            levels = {x.strip() for x in m.group(2).split(",")}
            fields = set(re.findall(r"`([a-z_]+)`", m.group(3)))
            assert m.group(1) not in rows, f"{m.group(1)} is listed twice"
            rows[m.group(1)] = (levels, fields)
    return rows


def test_the_catalogue_lists_exactly_the_events_the_code_writes() -> None:
    code = events_in_code()
    assert {"address_banned", "limits_store_down", "limits_store_up", "anomaly_flagged",
            "request"} <= set(code)  # the collector does find them
    assert set(catalogue()) == {*code, LIBRARY_EVENT}


def test_each_event_has_the_levels_and_fields_the_catalogue_gives() -> None:
    listed = catalogue()
    for name, event in events_in_code().items():
        levels, fields = listed[name]
        if event.levels:
            assert levels == event.levels, name
        if not event.open_fields:
            assert fields == event.fields, name


def test_no_module_logs_through_the_standard_library() -> None:
    """Our lines go through structlog with event names; `logging` is for libraries."""
    users = []
    for base in SOURCES:
        for path in sorted((ROOT / base).rglob("*.py")):
            if path == ROOT / "lunos_proxy" / "logs.py":
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import) and any(a.name == "logging" for a in node.names):
                    users.append(str(path.relative_to(ROOT)))
                if isinstance(node, ast.ImportFrom) and node.module == "logging":
                    users.append(str(path.relative_to(ROOT)))
    assert users == []
