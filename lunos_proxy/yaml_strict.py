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
        at = f"line {mark.line + 1}" if mark is not None else "(top)"
        reason = getattr(e, "problem", None) or "not valid YAML"
        raise YamlError([f"{label}: {at}: {reason}"]) from None
    finally:
        loader.dispose()


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
