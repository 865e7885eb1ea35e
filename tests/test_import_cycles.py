"""No import cycles inside ``genesis_build/`` or ``stages/``, and the engine never imports the plugin.

Every ``import`` statement counts, at module level or inside a function (a lazy import still ties
the two modules together), except those under ``if TYPE_CHECKING:``. Shared helpers move down into
a module both sides import (``errors.py``, ``context.py``, ``training/process.py``, ``data_lib``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("genesis_build", "stages")


def module_names(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """Dotted module name → file, for every .py under the packages."""
    out = {}
    for pkg in packages:
        for f in sorted((root / pkg).rglob("*.py")):
            parts = list(f.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = f
    return out


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.append(child)
            visit(child)

    visit(tree)
    return found


def import_graph(root: Path, packages: tuple[str, ...] = PACKAGES) -> nx.DiGraph:
    """Edges module → module it imports (resolved to the deepest module of ours that exists)."""
    mods = module_names(root, packages)
    g = nx.DiGraph()
    g.add_nodes_from(mods)
    for mod, f in mods.items():
        is_pkg = f.name == "__init__.py"
        for node in _imports(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                if node.level:
                    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    prefix = ".".join(base + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ""
                names = [prefix] + [f"{prefix}.{a.name}" for a in node.names]
            for n in names:
                while n and n not in mods:
                    n = n.rpartition(".")[0]
                if n and n != mod:
                    g.add_edge(mod, n)
    return g


def cycles(g: nx.DiGraph) -> list[list[str]]:
    """Every elementary cycle, shortest first."""
    return sorted(nx.simple_cycles(g), key=len)


def test_no_import_cycles_in_engine_or_stages() -> None:
    found = cycles(import_graph(ROOT))
    assert not found, "import cycles:\n" + "\n".join(" → ".join([*c, c[0]]) for c in found[:10])


def test_the_engine_imports_nothing_from_the_stages_package() -> None:
    g = import_graph(ROOT)
    bad = sorted((a, b) for a, b in g.edges if a.startswith("genesis_build") and b.split(".")[0] == "stages")
    assert not bad, bad


def test_the_checker_finds_a_cycle_through_a_lazy_import(tmp_path: Path) -> None:
    pkg = tmp_path / "stages"
    (pkg / "lib").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "lib" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from stages.lib.b import helper\n")
    (pkg / "lib" / "b.py").write_text("def helper():\n    from ..a import x\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from stages import a\n")
    (tmp_path / "genesis_build").mkdir()
    (tmp_path / "genesis_build" / "__init__.py").write_text("")
    (tmp_path / "genesis_build" / "cli.py").write_text("def f():\n    import stages.c\n")
    g = import_graph(tmp_path)
    assert cycles(g) == [["stages.a", "stages.lib.b"]] or cycles(g) == [["stages.lib.b", "stages.a"]]
    assert ("stages.c", "stages.a") not in g.edges  # TYPE_CHECKING-only imports do not count
    assert ("genesis_build.cli", "stages.c") in g.edges
