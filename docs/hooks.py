"""MkDocs hook: the configuration reference, generated from the pydantic models so that it cannot drift."""

from __future__ import annotations

from typing import Any


def on_files(files: Any, config: Any) -> Any:
    """Add ``configuration.md`` (every YAML key, its type, default and meaning) to the site."""
    from mkdocs.structure.files import File

    from ecgvgg.config_reference import reference_markdown

    files.append(File.generated(config, "configuration.md", content=reference_markdown()))
    return files
