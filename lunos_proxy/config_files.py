"""Files a config names: found relative to the config file, checked when it loads.

A settings field typed `ConfigFile` (or a type made with `checked_file`)
holds the path of a file the proxy reads: a pricing table, a TLS
certificate. When the config loads, a relative path is made absolute
against the folder of the config file (not the working directory, so
``pricing: pricing.yaml`` beside ``lunos.yaml`` works wherever the proxy
is started), and the file must be readable; a file with a checker is
also parsed. So `lunos-proxy check` and a reload refuse a config whose
files are missing or broken, instead of `serve` failing on them later.

    class Settings(msgspec.Struct):
        template: ConfigFile = ""           # read at start
        table: PricingFile = ""             # checked_file(parse_it) also parses it

Files the proxy writes itself (the embedded store's data file, a
generated key or token file) are state, not config, and stay relative to
the working directory.
"""

from __future__ import annotations

import functools
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import msgspec

__all__ = ["ConfigFile", "FileCheck", "checked_file", "resolve_files", "type_hints"]

# Problems in a readable file, as finished ``FILE: where: what`` lines.
FileCheck = Callable[[Path], list[str]]

_MARK = "lunos_config_file"


def _no_check(path: Path) -> list[str]:
    return []


ConfigFile = Annotated[str, msgspec.Meta(extra={_MARK: _no_check})]


def checked_file(check: FileCheck) -> msgspec.Meta:
    """The annotation for a file whose content `check` validates:
    ``PricingFile = Annotated[str, checked_file(pricing_problems)]``."""
    return msgspec.Meta(extra={_MARK: check})


def resolve_files(
    value: Any, where: str, base: Path, problems: list[str], file_problems: list[str]
) -> None:
    """Make the file paths in `value` (a settings struct) absolute against
    `base` and check each file: problems with the path go to `problems`
    (``where: what``), problems inside a file to `file_problems` (whole lines)."""
    if isinstance(value, msgspec.Struct):
        hints = type_hints(type(value))
        for name in value.__struct_fields__:
            at = f"{where}.{name}" if where else name
            field = getattr(value, name)
            check = _file_check(hints.get(name))
            if check is not None and isinstance(field, str) and field:
                path = base / field  # an absolute `field` stays as it is
                setattr(value, name, str(path))
                if not path.is_file():
                    reason = "not a file" if path.exists() else "no such file"
                    problems.append(f"{at}: cannot read {path}: {reason}")
                    continue
                try:
                    with path.open("rb"):
                        pass
                except OSError as e:
                    problems.append(f"{at}: cannot read {path}: {e.strerror}")
                    continue
                file_problems += check(path)
            else:
                resolve_files(field, at, base, problems, file_problems)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            resolve_files(item, f"{where}[{i}]", base, problems, file_problems)
    elif isinstance(value, dict):
        for key, item in value.items():
            resolve_files(item, f"{where}.{key}", base, problems, file_problems)


@functools.cache
def type_hints(cls: type) -> dict[str, Any]:
    """A struct's field types, Annotated metadata kept."""
    try:
        return typing.get_type_hints(cls, include_extras=True)
    except (NameError, TypeError):  # a forward reference we cannot see: no files there
        return {}


def _file_check(hint: Any) -> FileCheck | None:
    """The checker of a `ConfigFile`-like hint (also inside ``X | None``)."""
    if hint is None:
        return None
    if typing.get_origin(hint) is Annotated:
        for meta in hint.__metadata__:
            if isinstance(meta, msgspec.Meta) and meta.extra and _MARK in meta.extra:
                check: FileCheck = meta.extra[_MARK]
                return check
        return None
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            found = _file_check(arg)
            if found is not None:
                return found
    return None
