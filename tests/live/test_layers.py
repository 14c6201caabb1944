"""The import contracts of .importlinter hold, and the layers contract catches an import that points up."""

from __future__ import annotations

import configparser
import re
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]
CONFIG = PROJECT / ".importlinter"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
LAYERS_CONTRACT = "importlinter:contract:fitflix-layers"


def lint_imports(config: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The venv's lint-imports on `config`, finding the packages in `cwd`; no cache written into the tree."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", str(config)], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_the_project_keeps_its_import_contracts():
    result = lint_imports(CONFIG, PROJECT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def layer_modules(layers: str) -> list[str]:
    """The module names of a layers option, highest first: "a | b" and "a : b" are two, "(a)" is a."""
    return [name.strip().strip("()") for line in layers.splitlines() if line.strip() for name in re.split("[|:]", line)]


def mirror_of_fitflix(root: Path) -> Path:
    """A package `fitflix` with one empty module per layer of the real contract, and a config of that contract alone.

    Its __init__ imports the web layer in its app factory, as fitflix/__init__.py's init_app does.
    """
    real = configparser.ConfigParser()
    real.read(CONFIG)
    config = configparser.ConfigParser()
    config["importlinter"] = {"root_packages": "\nfitflix"}  # a list: one name a line
    config[LAYERS_CONTRACT] = dict(real[LAYERS_CONTRACT])
    package = root / "fitflix"
    package.mkdir()
    for name in layer_modules(real[LAYERS_CONTRACT]["layers"]):
        (package / f"{name}.py").write_text("")
    (package / "__init__.py").write_text("def create_app():\n    from fitflix import web\n")
    with open(root / ".importlinter", "w") as file:
        config.write(file)
    return root / ".importlinter"


def test_the_mirror_of_fitflix_keeps_the_real_layers_contract(tmp_path):
    """What the next test breaks is whole and kept before one import is added to it."""
    result = lint_imports(mirror_of_fitflix(tmp_path), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("module", "line", "refused"),
    [
        ("memory", "import fitflix.serving", "fitflix.memory is not allowed to import fitflix.serving"),
        ("settings", "import fitflix.memory", "fitflix.settings is not allowed to import fitflix.memory"),
        ("errors", "import fitflix.settings", "fitflix.errors is not allowed to import fitflix.settings"),
        # As serving/worker.py once took SECURITY_HEADERS from fitflix/__init__.py: the container is in
        # no layer, but it imports the web layer, so the chain through it points up.
        ("serving", "from fitflix import create_app", "fitflix.serving is not allowed to import fitflix.web"),
    ],
)
def test_the_layers_contract_refuses_an_import_that_points_up(tmp_path, module, line, refused):
    config = mirror_of_fitflix(tmp_path)
    (tmp_path / "fitflix" / f"{module}.py").write_text(line + "\n")
    result = lint_imports(config, tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert refused in result.stdout, result.stdout
