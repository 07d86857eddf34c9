"""YAML for operators' files: safe, and a key given twice is an error.

PyYAML's loaders keep the last of two equal keys in a mapping, so a
second ``port:`` further down a long file silently wins. `load_yaml`
composes the document first, reports every repeated key with its line
and path (``FILE:LINE: where: what``), and only then builds the data.
"""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["YamlError", "load_yaml"]


class YamlError(Exception):
    """Text that is not usable YAML; `problems` are finished report lines."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def load_yaml(text: str, label: str) -> Any:
    """The data of one YAML document (None when empty); `label` names the file."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        problems: list[str] = []
        _find_duplicates(node, "", label, problems)
        if problems:
            raise YamlError(problems)
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        reason = _plain(getattr(e, "problem", None) or "")
        if mark is None:
            raise YamlError([f"{label}: (yaml): {reason}"]) from None
        # The same FILE:LINE: form as a duplicate key's line.
        raise YamlError(
            [f"{label}:{mark.line + 1}: (yaml): {reason} (column {mark.column + 1})"]
        ) from None
    finally:
        loader.dispose()


# The parser's words for the mistakes operators make most, said plainly.
_PLAIN = (
    ("expected <block end>", "the indentation does not line up with the lines above"),
    ("mapping values are not allowed here",
     "a ':' where a value was expected (a key indented too far, or a value "
     "holding ': ' that needs quotes)"),
    ("could not find expected ':'", "a line that is not 'key: value' (or indented wrongly)"),
    ("found character '\\t' that cannot start any token", "a tab: indent with spaces"),
)


def _plain(reason: str) -> str:
    for start, plain in _PLAIN:
        if reason.startswith(start):
            return plain
    return f"not valid YAML: {reason}" if reason else "not valid YAML"


def _find_duplicates(node: yaml.Node, where: str, label: str, problems: list[str]) -> None:
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                _find_duplicates(value, where, label, problems)
                continue
            name = str(key.value)
            path = f"{where}.{name}" if where else name
            line = key.start_mark.line + 1
            if name in first:
                problems.append(
                    f"{label}:{line}: {path}: duplicate key (first given on line {first[name]})"
                )
            else:
                first[name] = line
            _find_duplicates(value, path, label, problems)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _find_duplicates(item, f"{where}[{i}]", label, problems)
