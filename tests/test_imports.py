"""The package's import graph: no cycle (type-checking and lazy imports included), and short chains of the
imports that run."""

from __future__ import annotations

import ast
from functools import lru_cache

from conftest import ROOT

PACKAGE = ROOT / "ecgvgg"


def _type_checking_blocks(tree: ast.AST) -> set[int]:
    """Ids of the import nodes inside ``if TYPE_CHECKING:`` blocks."""
    inside = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", "")) == "TYPE_CHECKING":
            inside |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    return inside


def _graph(runtime_only: bool) -> dict[str, set[str]]:
    """Each module of the package and the package modules it imports anywhere in its file."""
    files = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text())
        skip = _type_checking_blocks(tree) if runtime_only else set()
        found = set()
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ecgvgg"):
                found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
        graph[name] = {m for m in found if m in files and m != name and m != "ecgvgg"}
    return graph


def _longest(graph: dict[str, set[str]]) -> tuple[str, ...]:
    """The longest chain of imports; an import cycle fails the test that asks."""

    @lru_cache(maxsize=None)
    def longest(module: str, seen: frozenset = frozenset()) -> tuple[str, ...]:
        assert module not in seen, f"import cycle through {module}: {sorted(seen)}"
        chains = [longest(m, seen | {module}) for m in graph[module]]
        return (module, *max(chains, key=len, default=()))

    return max((longest(m) for m in graph), key=len)


def test_no_import_cycle_not_even_for_type_checking():
    assert _longest(_graph(runtime_only=False))


def test_the_longest_chain_of_imports_that_run_is_at_most_eight_modules():
    chain = _longest(_graph(runtime_only=True))
    assert len(chain) <= 8, " -> ".join(chain)
