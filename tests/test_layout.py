"""The code's shape: three folders (the core, the MLflow edge, the command-line edge), data flowing one way,
the oversampler with one caller, short functions."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import ROOT

PACKAGE = ROOT / "ecgvgg"
#: Each part of the package, the third-party packages it must not import, and the parts it must not import.
PARTS = {
    "core": ({"mlflow", "rich", "optuna", "typer"}, {"ecgvgg.tracking", "ecgvgg.cli"}),
    "tracking": ({"rich", "typer"}, {"ecgvgg.cli"}),
    "cli": (set(), set()),
}


def _modules(folder: str | None = None) -> list[Path]:
    """The package's modules, or those of one part."""
    return sorted((PACKAGE / folder).rglob("*.py") if folder else PACKAGE.rglob("*.py"))


def _imports(path: Path, depth: int = 1) -> set[str]:
    """Dotted names a module imports, cut to ``depth`` parts, at any depth of the file."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {".".join(a.name.split(".")[:depth]) for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(".".join(node.module.split(".")[:depth]))
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


def test_every_module_sits_in_one_of_the_three_parts():
    loose = [p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"]
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert not loose and folders == {*PARTS, "pretrained"}, (loose, folders)


@pytest.mark.parametrize("part", PARTS)
def test_each_part_imports_only_what_its_layer_may(part):
    banned, inner = PARTS[part]
    for path in _modules(part):
        assert not _imports(path) & banned, f"{path.relative_to(ROOT)} imports {_imports(path) & banned}"
        assert not _imports(path, 2) & inner, f"{path.relative_to(ROOT)} imports {_imports(path, 2) & inner}"


def test_mlflow_is_imported_only_by_the_mlflow_edge():
    assert {p.parent.name for p in _modules() if "mlflow" in _imports(p)} == {"tracking"}


def test_no_private_name_is_imported_across_modules():
    private = [
        f"{p.relative_to(ROOT)}: {n.module}.{a.name}"
        for p in _modules()
        for n in ast.walk(ast.parse(p.read_text()))
        if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("ecgvgg")
        for a in n.names
        if a.name.startswith("_") and a.name != "__version__"
    ]
    assert not private


def test_only_the_folds_module_calls_the_oversampler():
    callers = {str(p.relative_to(ROOT)): _calls(p, "oversample") for p in [*_modules(), *(ROOT / "benchmarks").glob("*.py")]}
    assert {p for p, lines in callers.items() if lines} == {"ecgvgg/core/folds.py"}
    # and imbalanced-learn's own entry point is called only by the oversampler's module
    fit_resample = {str(p.relative_to(ROOT)) for p in _modules() if _calls(p, "fit_resample")}
    assert fit_resample == {"ecgvgg/core/resampling.py"}


def _body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of a function after its signature and docstring (the formatter may spread a signature)."""
    body = (
        node.body[1:]
        if isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant) and len(node.body) > 1
        else node.body
    )
    return (node.end_lineno or body[0].lineno) - body[0].lineno + 1


def test_no_function_body_is_longer_than_sixty_lines():
    long = [
        f"{p.name}:{n.name} ({_body_lines(n)})"
        for p in _modules()
        for n in ast.walk(ast.parse(p.read_text()))
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and _body_lines(n) > 60
    ]
    assert not long


def test_the_command_line_module_stays_small_and_opens_no_run():
    main = PACKAGE / "cli" / "main.py"
    assert len(main.read_text().splitlines()) < 400
    openers = {str(p.relative_to(PACKAGE)) for p in _modules() if _calls(p, "start_run")}
    assert openers == {"tracking/log.py"}  # every parent and child run is opened in one module


def test_library_code_never_sets_the_process_wide_tracking_uri():
    assert not [p.name for p in _modules() if _calls(p, "set_tracking_uri")]
