"""utils/ is layered along the data flow: a module imports only from its own package or from layers below it,
so no two packages import each other."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

UTILS = Path(__file__).resolve().parent.parent / "utils"
# Bottom to top. errors, distributed and run_files are the ground; flags, the command line, sees every layer.
LAYERS = [{"errors", "distributed", "run_files"}, {"data"}, {"rewards"}, {"models"}, {"engine"}, {"objectives"},
          {"evaluation"}, {"flags"}]


def layer_of(unit: str) -> int:
    return next(i for i, names in enumerate(LAYERS) if unit in names)


def unit_of(path: Path, root: Path = UTILS) -> str:
    """A module's layer unit: its package under utils/, or its own name for a module at the top."""
    return path.relative_to(root).with_suffix("").parts[0]


def imported_units(path: Path) -> set[tuple[str, int]]:
    """The utils units a file imports, anywhere in it (function-level imports count), with their line numbers."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = node.module.split(".")
            if names[0] == "utils":
                units = [names[1]] if len(names) > 1 else [alias.name for alias in node.names]
                found |= {(unit, node.lineno) for unit in units}
        elif isinstance(node, ast.Import):
            found |= {(alias.name.split(".")[1], node.lineno) for alias in node.names
                      if alias.name.startswith("utils.")}
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}:{node.lineno}: relative import; write utils.<package>.<module>")
    return found


def violations(root: Path = UTILS) -> list[str]:
    problems = []
    for path in sorted(root.rglob("*.py")):
        unit = unit_of(path, root)
        for imported, line in sorted(imported_units(path)):
            if imported != unit and layer_of(imported) >= layer_of(unit):
                problems.append(f"{path.relative_to(root.parent)}:{line}: {unit} imports {imported}, "
                                f"which is not below it")
    return problems


def test_every_package_and_top_module_has_a_layer():
    units = {unit_of(p) for p in UTILS.rglob("*.py") if p.name != "__init__.py" or p.parent != UTILS}
    assert units == set().union(*LAYERS)


def test_imports_only_go_down():
    assert violations() == []


@pytest.mark.parametrize("source, expected", [
    ("from utils.engine.loop import train\n", "data imports engine"),  # upward
    ("from utils import flags\n", "data imports flags"),  # upward, the package-import spelling
    ("def f():\n    import utils.models.lora\n", "data imports models"),  # inside a function
])
def test_an_upward_import_is_caught(tmp_path, source, expected):
    (tmp_path / "utils" / "data").mkdir(parents=True)
    (tmp_path / "utils" / "data" / "planted.py").write_text(source)
    (tmp_path / "utils" / "data" / "fine.py").write_text("from utils.errors import UserError\n"
                                                          "from utils.data.sources import Row\n")
    assert [expected in v for v in violations(tmp_path / "utils")] == [True]



def test_pyproject_declares_every_package():
    """An installed (non-editable) copy holds only the packages pyproject.toml lists."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    declared = set(tomllib.loads((UTILS.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    on_disk = {".".join(p.parent.relative_to(UTILS.parent).parts) for p in UTILS.rglob("__init__.py")}
    assert declared == on_disk
