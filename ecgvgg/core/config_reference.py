"""The configuration reference (every YAML key, its type, default and meaning), generated from :mod:`ecgvgg.core.config`.

The meaning of a key is the ``#:`` comment above its field; the documentation site is built from this,
so the reference cannot drift from the code.
"""

from __future__ import annotations

import inspect
import re
import typing
from typing import Any

from pydantic import BaseModel

from ecgvgg.core.config import PipelineConfig

_FIELD = re.compile(r"^\s+(\w+)\s*:")


def field_comments(model: type[BaseModel]) -> dict[str, str]:
    """The ``#:`` comment lines above each field of a pydantic model's class body, joined."""
    comments: dict[str, str] = {}
    pending: list[str] = []
    for line in inspect.getsource(model).splitlines()[1:]:
        stripped = line.strip()
        if stripped.startswith("#:"):
            pending.append(stripped[2:].strip())
            continue
        match = _FIELD.match(line)
        if match and match.group(1) in model.model_fields and pending:
            comments[match.group(1)] = " ".join(pending)
        if stripped and not stripped.startswith("#"):
            pending = []
    return comments


def type_text(annotation: Any) -> str:
    """A field's type in words: ``int``, ``list[str]``, ``"auto" | "balanced"``, ``float or null``."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a!r}`".replace("'", '"') for a in args)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", ())):
        parts = [type_text(a) for a in args if a is not type(None)]
        return " \\| ".join(parts) + (" or null" if type(None) in args else "")
    if origin in (list, dict, tuple):
        return f"{origin.__name__}[{', '.join(type_text(a) for a in args)}]"
    return getattr(annotation, "__name__", str(annotation))


def reference_markdown() -> str:
    """The whole reference as Markdown: one table per section of a pipeline YAML."""
    lines = [
        "# Configuration reference",
        "",
        "Every key of a pipeline YAML file, generated from ecgvgg's configuration models. Unknown keys "
        "and values of the wrong type are refused in one line naming the key. Set any of them on the "
        "command line with `--set section.key=value`.",
        "",
    ]
    top = field_comments(PipelineConfig)
    for name, info in PipelineConfig.model_fields.items():
        section = info.annotation
        if not (isinstance(section, type) and issubclass(section, BaseModel)):
            lines += [f"## `{name}`", "", f"{type_text(section)}, default `{info.default!r}`. {top.get(name, '')}", ""]
            continue
        lines += [
            f"## `{name}`",
            "",
            (inspect.getdoc(section) or "").splitlines()[0],
            "",
            "| key | type | default | meaning |",
            "|---|---|---|---|",
        ]
        comments = field_comments(section)
        for key, field in section.model_fields.items():
            factory: Any = field.default_factory  # takes no argument for these models
            default = (
                "required" if field.is_required() else (f"`{factory()!r}`" if factory is not None else f"`{field.default!r}`")
            )
            text = comments.get(key, "").replace("|", "\\|")
            lines.append(f"| `{name}.{key}` | {type_text(field.annotation)} | {default} | {text} |")
        lines.append("")
    return "\n".join(lines) + "\n"
