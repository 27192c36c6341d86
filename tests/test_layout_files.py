"""The checkout's layout: a tracked, empty mlruns/ shows where runs go."""

from __future__ import annotations

from fnmatch import fnmatch

from conftest import ROOT


def test_mlruns_folder_is_kept_and_its_contents_ignored():
    assert (ROOT / "mlruns" / ".gitkeep").is_file()
    rules = [ln.strip() for ln in (ROOT / ".gitignore").read_text().splitlines() if ln.strip()]
    assert "!mlruns/.gitkeep" in rules
    ignored = [r for r in rules if not r.startswith("!")]
    for path in ("mlruns/mlflow.db", "mlruns/runs"):
        assert any(fnmatch(path, r) for r in ignored), path
    assert not any(fnmatch("mlruns/.gitkeep", r) and r != "mlruns/*" for r in ignored)
