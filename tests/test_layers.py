"""The package's layers depend only downward: no module imports from a layer above its own."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pyro_vaeflow"

LAYERS = [
    {"validation", "faults", "files", "checkpoint", "distributed", "interrupt", "lock"},
    {"nets", "transforms", "data"},
    {"distributions", "acceleration"},
    {"models"},
    {"infer", "metrics", "plotting", "rundir"},
    {"training"},
    {"presets"},
    {"run", "experiment"},
    {"cli", "__main__", "__init__"},
]
"""Each top-level module or subpackage of ``pyro_vaeflow``, lowest layer first."""


def layer(name: str) -> int:
    (index,) = [i for i, names in enumerate(LAYERS) if name in names]
    return index


def imports(path: Path) -> set[str]:
    """The ``pyro_vaeflow`` parts a module imports, outside ``if TYPE_CHECKING:`` blocks."""
    found = set()
    tree = ast.parse(path.read_text())
    skipped = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for node in ast.walk(block)
    }
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path.name}: a relative import; the package imports absolutely")
        if isinstance(node, ast.ImportFrom) and node.module == "pyro_vaeflow":
            # ``from pyro_vaeflow import plotting`` imports a part; any other name, __init__
            found.update(a.name if a.name in PARTS else "__init__" for a in node.names)
            continue
        names = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        found.update(n.split(".")[1] for n in names if n.startswith("pyro_vaeflow."))
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))
PARTS = {path.relative_to(PACKAGE).parts[0].removesuffix(".py") for path in MODULES}


def test_every_part_of_the_package_has_a_layer():
    assert set().union(*LAYERS) >= PARTS


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_import_from_a_higher_layer(path):
    own = layer(path.relative_to(PACKAGE).parts[0].removesuffix(".py"))
    upward = sorted(name for name in imports(path) if layer(name) > own)
    assert upward == [], f"{path.name} imports from higher layers: {upward}"
