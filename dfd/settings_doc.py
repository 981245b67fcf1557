"""The settings table of the README, generated from :class:`dfd.settings.Settings`.

``python -m dfd.settings_doc`` prints one Markdown table row per field: its environment
variable, type, default and description, in the order the fields are declared (which
groups them by section). The README's table is this output; a test keeps them equal.
"""

from __future__ import annotations

import json
import sys
import types
import typing
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from dfd.settings import Settings

HEADER = "| Variable | Type | Default | Description |\n|---|---|---|---|"


def env_name(field: str) -> str:
    prefix = str(Settings.model_config.get("env_prefix", ""))
    return f"{prefix}{field}".upper()


def type_name(annotation: Any) -> str:
    """A short, readable name for a field's annotation (``int``, ``list[str]``, ``cpu | gpu``)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join("none" if a is type(None) else type_name(a) for a in args)
    if origin is list:
        return f"list[{type_name(args[0])}]" if args else "list"
    if annotation is SecretStr:
        return "secret"
    if isinstance(annotation, type) and issubclass(annotation, Path):
        return "path"
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation)


def default_value(field: FieldInfo) -> str:
    """The default as it would be written in the environment; ``unset`` for ``None``."""
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if value is None:
        return "unset"
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, list | dict):
        text = json.dumps(value)
    else:
        text = str(value)
    return f"`{text}`" if text else '`""`'


def rows() -> list[tuple[str, str, str, str]]:
    """(variable, type, default, description) for every field, in declaration order."""
    out = []
    for name, field in Settings.model_fields.items():
        description = (field.description or "").replace("|", "\\|").replace("\n", " ")
        out.append(
            (f"`{env_name(name)}`", type_name(field.annotation), default_value(field), description)
        )
    return out


def settings_table() -> str:
    """The whole Markdown table, header included, ending with a newline."""
    body = "\n".join(f"| {v} | {t} | {d} | {desc} |" for v, t, d, desc in rows())
    return f"{HEADER}\n{body}\n"


def main() -> int:
    sys.stdout.write(settings_table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
