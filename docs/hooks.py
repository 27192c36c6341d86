"""MkDocs hooks: the configuration reference, generated from the pydantic models so that it cannot drift, and
the changelog, read from the repository's ``CHANGELOG.md``."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def on_files(files: Any, config: Any) -> Any:
    """Add ``configuration.md`` (every YAML key, its type, default and meaning) to the site."""
    from mkdocs.structure.files import File

    from ecgvgg.core.config_reference import reference_markdown

    files.append(File.generated(config, "configuration.md", content=reference_markdown()))
    changelog = Path(config["config_file_path"]).parent / "CHANGELOG.md"
    files.append(File.generated(config, "changelog.md", content=changelog.read_text()))
    return files
