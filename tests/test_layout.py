"""The code's shape: data flows one way, the oversampler has one caller, MLflow stays at the edge."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import ROOT

PACKAGE = ROOT / "ecgvgg"
CORE = ("data", "stream", "inputs", "folds", "resampling", "shapes", "models", "training", "augment", "metrics", "study",
        "dataset", "contract", "events", "records", "annotate", "baselines", "config_reference", "results")


def _imports(path: Path) -> set[str]:
    """Top-level package names a module imports, at any depth of the file."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def _calls(path: Path, name: str) -> list[int]:
    """Lines of ``path`` that call a function named ``name`` (plain or as an attribute)."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            f = node.func
            if (isinstance(f, ast.Name) and f.id == name) or (isinstance(f, ast.Attribute) and f.attr == name):
                lines.append(node.lineno)
    return lines


@pytest.mark.parametrize("module", CORE)
def test_core_modules_import_no_mlflow_rich_or_optuna(module):
    assert not _imports(PACKAGE / f"{module}.py") & {"mlflow", "rich", "optuna"}


def test_mlflow_is_imported_by_at_most_four_modules():
    users = sorted(p.stem for p in PACKAGE.glob("*.py") if "mlflow" in _imports(p))
    assert len(users) <= 4, users


def test_only_the_folds_module_calls_the_oversampler():
    callers = {str(p.relative_to(ROOT)): _calls(p, "oversample") for p in [*PACKAGE.glob("*.py"),
                                                                        *(ROOT / "benchmarks").glob("*.py")]}
    assert {p for p, lines in callers.items() if lines} == {"ecgvgg/folds.py"}
    # and imbalanced-learn's own entry point is called only by the oversampler's module
    fit_resample = {str(p.relative_to(ROOT)) for p in PACKAGE.glob("*.py") if _calls(p, "fit_resample")}
    assert fit_resample == {"ecgvgg/resampling.py"}


def test_no_function_is_longer_than_sixty_lines():
    long = [f"{p.name}:{n.name} ({n.end_lineno - n.lineno + 1})" for p in PACKAGE.glob("*.py")
            for n in ast.walk(ast.parse(p.read_text()))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 60]
    assert not long


def test_the_command_line_module_stays_small_and_opens_no_run():
    cli = PACKAGE / "cli.py"
    assert len(cli.read_text().splitlines()) < 400
    assert "mlflow" not in _imports(cli)
    openers = {p.name for p in PACKAGE.glob("*.py") if _calls(p, "start_run")}
    assert openers == {"tracking.py"}  # every parent and child run is opened in one module


def test_library_code_never_sets_the_process_wide_tracking_uri():
    assert not [p.name for p in PACKAGE.glob("*.py") if _calls(p, "set_tracking_uri")]
