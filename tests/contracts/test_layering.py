"""The layers of gt_remote/ import only downwards: import-linter's contract holds, is shown to
catch an upward import, and every module stands in a layer."""

from __future__ import annotations

import pkgutil
import shutil
import tomllib
from pathlib import Path

import gt_remote
from tests.helpers import lint_imports
from tests.testbed import REPO

CONTRACT = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]


# --- layers -------------------------------------------------------------------------------


def test_layers_contract_holds() -> None:
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout and "KEPT" in result.stdout


def test_layers_contract_catches_an_import_that_runs_back_up(tmp_path: Path) -> None:
    shutil.copytree(REPO / "gt_remote", tmp_path / "gt_remote", symlinks=False, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "gt_remote/tunnel/upward.py").write_text("from gt_remote.runtime import supervisor  # a layer importing from above it\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0, result.stdout
    assert "BROKEN" in result.stdout and "gt_remote.tunnel.upward -> gt_remote.runtime.supervisor" in result.stdout


def test_every_module_of_gt_remote_stands_in_a_layer() -> None:
    """import-linter ignores modules that no layer names: a new module must be placed."""
    named = {part.strip() for layer in CONTRACT["layers"] for part in layer.replace(":", "|").split("|")}
    modules = {f"gt_remote.{info.name}" for info in pkgutil.iter_modules(gt_remote.__path__) if info.name != "__main__"}
    assert modules - named == set()

