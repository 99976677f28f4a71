"""The relay as uploaded is built from the stream core and the relay's own code
(gt_remote/remote/relay/build.py): one file that the remote's python3, as old as 3.8, runs with
nothing but its stdlib, and that holds the protocol once."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from gt_remote.protocol import stream
from gt_remote.remote.relay import build as relay_build
from tests.helpers import PYTHON_38, agent_file


def imported_roots(source: str) -> set[str]:
    tree = ast.parse(source, feature_version=(3, 8))
    names = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    return names | {str(node.module).split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}


def test_the_built_relay_is_python_3_8_syntax_and_imports_only_the_stdlib() -> None:
    assert imported_roots(relay_build.agent().decode()) <= set(sys.stdlib_module_names) | {"__future__"}


def test_the_shared_modules_import_only_the_stdlib_and_each_other() -> None:
    for name, text in relay_build.protocol_modules().items():
        assert imported_roots(text) <= set(sys.stdlib_module_names) | {"__future__", "gt_remote"}, name
        assert all(line.startswith(relay_build.IMPORT) for line in text.splitlines() if line.startswith(("from gt_remote", "import gt_remote"))), name


def test_the_built_relay_runs_under_python_3_8_isolated_from_this_package(tmp_path: Path) -> None:
    """-I: no user site, no PYTHONPATH, no current directory; and run from a folder with
    nothing of gt_remote beside it. It compiles, starts and answers --help."""
    assert PYTHON_38.exists(), f"{PYTHON_38} is missing: the relay must be tested under the oldest Python it claims"
    built = relay_build.write(tmp_path / "relay")
    subprocess.run([str(PYTHON_38), "-I", "-m", "py_compile", str(built)], check=True, cwd=tmp_path, timeout=60)
    result = subprocess.run([str(PYTHON_38), "-I", str(built), "--help"], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert result.returncode == 0 and "--socket" in result.stdout, result.stderr


def top_level_names(source: str) -> set[str]:
    return {node.name for node in ast.parse(source).body if isinstance(node, ast.ClassDef | ast.FunctionDef)}


def test_the_built_relay_holds_each_shared_module_once_and_the_relay_source_none_of_them() -> None:
    built = relay_build.agent().decode()
    relay_names = top_level_names(relay_build.RELAY.read_text())
    for name, text in relay_build.protocol_modules().items():
        assert built.count(f"# --- gt_remote/protocol/{name}.py ---") == 1, name
        assert top_level_names(text) <= top_level_names(built), name
        assert relay_names & top_level_names(text) == set(), f"the relay defines again what {name}.py has"
    assert "from gt_remote" not in built and "import gt_remote" not in built


def test_the_tests_run_the_file_that_is_uploaded() -> None:
    assert agent_file().read_bytes() == relay_build.agent()
    assert relay_build.digest() == __import__("hashlib").sha256(relay_build.agent()).hexdigest()[:16]


def test_an_import_the_remote_cannot_satisfy_is_a_build_error() -> None:
    for source in ("from gt_remote.base import errors\n", "from gt_remote.protocol.nothing import x\n", "from gt_remote.protocol.stream import (\n    x,\n"):
        try:
            relay_build.inline(source, relay_build.protocol_modules())
        except relay_build.BuildError as error:
            assert "gt_remote" in str(error)
        else:
            raise AssertionError(f"built a relay from {source!r}")


def test_the_core_module_is_the_one_the_laptop_imports() -> None:
    from gt_remote.tunnel import resumable

    assert resumable.core is stream
