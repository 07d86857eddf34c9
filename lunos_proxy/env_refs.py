"""Environment references in config strings: `${NAME}`, `${NAME:-default}`, `$$`.

Read after the YAML is parsed, before the schema converts it, so a whole
value read this way may still become a number or a switch (the schema
converts "8080" to 8080). What a shell would take for a variable but a
config file sends as is (`$OPENAI_API_KEY`, a `${` that begins no
reference, a `}` too many) is a problem, named with where it stands, not
a literal value sent to a provider.
"""

from __future__ import annotations

import os
import re
from typing import Any

__all__ = ["expand_env"]

# `$$` is one `$`; `${NAME}` and `${NAME:-default}` read the environment (a
# default holds no `${`: references do not nest).
_ENV_TOKEN = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-((?:(?!\$\{)[^}])*))?\}")
_SHELL_REF = re.compile(r"\$([A-Z_][A-Z0-9_]+)")
_EXTRA_BRACE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::-[^}]*)?\}\}")


def expand_env(node: Any, where: str, problems: list[str]) -> Any:
    """`node` (parsed YAML) with every string's references read; each problem
    is a ``where: what`` line added to `problems`, its string kept as is."""
    if isinstance(node, str):
        if "$" not in node:
            return node
        rest = _ENV_TOKEN.sub("", node)  # what is left once every reference is read
        # What a shell would read as a variable is sent as is by a config
        # file: a key of "$OPENAI_API_KEY" would reach the provider.
        shell = _SHELL_REF.search(rest)
        if shell is not None and "${" not in rest:
            problems.append(
                f"{where}: ${shell.group(1)} is not read from the environment: write "
                f"${{{shell.group(1)}}} (and $$ for a $)"
            )
            return node
        if "${" in rest:
            problems.append(
                f"{where}: a '${{' that begins no ${{NAME}} or ${{NAME:-default}} reference "
                "(references do not nest; $$ is a $)"
            )
            return node
        if _EXTRA_BRACE.search(node):
            problems.append(f"{where}: a '}}' too many after a ${{...}} reference")
            return node

        def sub(m: re.Match[str]) -> str:
            if m.group(0) == "$$":
                return "$"
            value = os.environ.get(m.group(1), m.group(2))
            if value is None:
                problems.append(f"{where}: environment variable {m.group(1)} is not set")
                return ""
            return value

        return _ENV_TOKEN.sub(sub, node)
    if isinstance(node, dict):
        return {
            k: expand_env(v, f"{where}.{k}" if where else str(k), problems)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [expand_env(v, f"{where}[{i}]", problems) for i, v in enumerate(node)]
    return node
