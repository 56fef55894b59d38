"""The package's layers import only downward: core < features < style < analysis < cli.

Every module's imports are read with ``ast`` (those inside functions too, and
``importlib.import_module("mmdstyle...")`` with a literal name), so a lazy import cannot hide an
upward dependency. Within one layer, modules import each other freely.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests import REPOSITORY

PACKAGE = REPOSITORY / "mmdstyle"

#: Layers from the bottom up. The core is every module directly in mmdstyle/.
LAYERS = ("core", "features", "style", "analysis", "cli")


def module_name(path: Path) -> str:
    """``mmdstyle/style/engine.py`` -> ``mmdstyle.style.engine``; a package is its __init__."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    """The layer of a module of mmdstyle; ``mmdstyle.__main__`` runs the command line."""
    parts = module.split(".")
    if parts[1:2] == ["__main__"]:
        return "cli"
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else "core"


def is_package(module: str) -> bool:
    return (PACKAGE.parent / module.replace(".", "/") / "__init__.py").is_file()


def imports_of(source: str, module: str) -> list[tuple[int, str, str]]:
    """``(line, imported module, imported name or "")`` for each import of mmdstyle in ``source``."""
    package = module if is_package(module) else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, "") for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                if is_package(submodule) or (PACKAGE.parent / f"{submodule.replace('.', '/')}.py").is_file():
                    found.append((node.lineno, submodule, ""))
                else:
                    found.append((node.lineno, base, alias.name))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value, ""))
    return [entry for entry in found if entry[1] == "mmdstyle" or entry[1].startswith("mmdstyle.")]


def violations(source: str, module: str) -> list[str]:
    """What ``module`` (whose text is ``source``) imports against the layering, one line each."""
    problems = []
    own = LAYERS.index(layer_of(module))
    for line, imported, name in imports_of(source, module):
        target = LAYERS.index(layer_of(imported))
        if target > own:
            problems.append(
                f"{module}:{line} imports {imported} ({LAYERS[target]}), a layer above {LAYERS[own]}"
            )
        if name.startswith("_") and not name.startswith("__"):
            problems.append(f"{module}:{line} imports the private name {name} of {imported}")
    return problems


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda path: str(path.relative_to(PACKAGE.parent)))
def test_imports_only_go_downward(path):
    assert violations(path.read_text(), module_name(path)) == []


def test_every_layer_is_a_folder_and_the_core_is_the_rest():
    folders = {path.name for path in PACKAGE.iterdir() if (path / "__init__.py").is_file()}
    assert folders == set(LAYERS[1:])
    core = {module_name(path) for path in PACKAGE.glob("*.py")}
    assert {"mmdstyle.kernels", "mmdstyle.mmd", "mmdstyle.losses", "mmdstyle.two_sample"} <= core


@pytest.mark.parametrize(
    ("module", "source", "problem"),
    [
        ("mmdstyle.mmd", "from mmdstyle.features import vgg", "a layer above core"),
        ("mmdstyle.features.vgg", "def f():\n    import mmdstyle.style.engine", "a layer above features"),
        ("mmdstyle.style.engine", "from mmdstyle import analysis", "a layer above style"),
        ("mmdstyle.analysis.figures", "from ..cli import options", "a layer above analysis"),
        ("mmdstyle.kernels", "importlib.import_module('mmdstyle.cli')", "a layer above core"),
        ("mmdstyle.style.specs", "from mmdstyle.mmd import _mmd2", "private name _mmd2"),
    ],
)
def test_the_check_catches_upward_and_private_imports(module, source, problem):
    (found,) = violations(source, module)
    assert problem in found


def test_the_check_allows_downward_and_sideways_within_a_layer():
    source = "from mmdstyle.kernels import Gaussian\nfrom mmdstyle.style import images\nfrom . import specs"
    assert violations(source, "mmdstyle.style.engine") == []
