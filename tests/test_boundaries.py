"""Architecture rules: the core never imports Qt, the trainer never imports the GUI, and heavy
libraries load lazily (DESIGN.md, "Boundaries")."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

QT_MODULES = ("PySide6", "PyQt5", "PyQt6", "PySide2", "pyqtgraph", "superqt", "qtpy")


def _python_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _core_files() -> list[Path]:
    gui = REPO / "cxrviewer" / "gui"
    return [p for p in _python_files(REPO / "cxrviewer") if gui not in p.parents] + _python_files(REPO / "trainer")


def test_nothing_outside_gui_imports_qt():
    offenders = {str(p.relative_to(REPO)): sorted(n for n in _imports(p) if n.split(".")[0] in QT_MODULES)
                 for p in _core_files()}
    assert not {k: v for k, v in offenders.items() if v}


def test_trainer_never_imports_the_gui():
    offenders = {str(p.relative_to(REPO)): sorted(n for n in _imports(p) if n.startswith("cxrviewer.gui"))
                 for p in _python_files(REPO / "trainer")}
    assert not {k: v for k, v in offenders.items() if v}


def test_core_modules_load_without_qt_at_runtime():
    """Import every core module in a fresh interpreter; no Qt module may end up loaded."""
    modules = []
    for path in _core_files():
        rel = path.relative_to(REPO).with_suffix("")
        parts = list(rel.parts)
        if parts[0] == "trainer":
            parts = ["cxrviewer", "trainer", *parts[1:]]
        if parts[0] == "resources":
            parts = ["cxrviewer", "resources", *parts[1:]]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if parts[-1] == "__main__":
            continue
        modules.append(".".join(parts))
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"bad = [m for m in sys.modules if m.split('.')[0] in {QT_MODULES!r}]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_cli_starts_without_torch_or_qt():
    code = "import sys, cxrviewer.cli; print(sorted(m for m in ('torch', 'PySide6', 'radiomics') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.stdout.strip() == "[]", out.stderr


@pytest.mark.parametrize("command", [["cxrviewer-train", "--help"], ["cxrviewer", "--help"], ["cxrviewer", "info", "-h"]])
def test_console_scripts_are_installed(command):
    exe = Path(sys.executable).parent / command[0]
    out = subprocess.run([str(exe), *command[1:]], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "usage" in out.stdout


def test_every_package_directory_is_listed_in_pyproject():
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    mapping = {"cxrviewer": REPO / "cxrviewer", "cxrviewer.trainer": REPO / "trainer",
               "cxrviewer.resources": REPO / "resources"}
    found = set()
    for name, root in mapping.items():
        for init in root.rglob("__init__.py"):
            rel = init.parent.relative_to(root).parts
            if name == "cxrviewer" and rel and rel[0] in ("trainer", "resources"):
                continue
            found.add(".".join([name, *rel]))
    assert found == listed
