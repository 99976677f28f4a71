"""docker/testbed.sh's modes (#30): `make demo` sets up only what the demo uses, the engine and
the images; `make test` also the laptop programs the tests drive (fish, zsh, rsync, MariaDB...).

Run on a laptop that has none of those programs: a PATH of the few the script itself needs,
`docker` a stand-in that answers as an engine with both images ready, and `apt-get` one that
writes down each call and fails. Nothing is installed, nothing of the machine's is touched."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.testbed import REPO, context_hash

TOOLS = ("bash", "sh", "cat", "sha256sum", "cut", "dirname", "id")


@pytest.fixture
def bare_laptop(tmp_path: Path) -> tuple[dict[str, str], Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in TOOLS:
        found = shutil.which(tool)
        assert found, f"{tool} is missing here"
        (bin_dir / tool).symlink_to(found)
    calls = tmp_path / "calls"
    (bin_dir / "docker").write_text(
        "#!/bin/sh\n"
        'case "$1 $2" in\n'
        '    "info "*) exit 0 ;;\n'
        '    "image inspect") [ "$3" = -f ] && echo "$WANT_CONTEXT"; exit 0 ;;\n'
        "esac\n"
        'echo "docker $*" >> "$CALLS"; exit 1\n'
    )
    (bin_dir / "apt-get").write_text('#!/bin/sh\necho "apt-get $*" >> "$CALLS"\nexit 1\n')
    for stub in ("docker", "apt-get"):
        (bin_dir / stub).chmod(0o755)
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path), "CALLS": str(calls), "WANT_CONTEXT": context_hash()}
    return env, calls


def run_testbed(env: dict[str, str], mode: str | None) -> subprocess.CompletedProcess[str]:
    mode_env = {"GT_REMOTE_TESTBED": mode} if mode else {}
    return subprocess.run([str(Path(env["PATH"]) / "bash"), str(REPO / "docker" / "testbed.sh")], env={**env, **mode_env}, capture_output=True, text=True, timeout=60)


def test_the_demo_mode_installs_none_of_the_tests_programs(bare_laptop: tuple[dict[str, str], Path]) -> None:
    env, calls = bare_laptop
    result = run_testbed(env, "demo")
    assert result.returncode == 0, result.stderr
    assert "ready (demo): engine up" in result.stderr
    assert not calls.exists(), calls.read_text()  # no apt-get, and nothing but docker's checks
    assert not re.search(r"fish|zsh|mariadb|rsync", result.stderr), result.stderr


def test_the_full_mode_sets_up_the_tests_programs(bare_laptop: tuple[dict[str, str], Path]) -> None:
    env, calls = bare_laptop
    result = run_testbed(env, None)
    assert result.returncode != 0  # the stand-in apt-get fails, or (not root) the script names what to install
    said = result.stderr + (calls.read_text() if calls.exists() else "")
    assert "fish" in said and "zsh" in said and "mariadb" in said, said
    if os.getuid() == 0:
        assert "apt-get update" in calls.read_text()


def test_an_unknown_mode_is_refused_naming_the_modes(bare_laptop: tuple[dict[str, str], Path]) -> None:
    env, calls = bare_laptop
    result = run_testbed(env, "tiny")
    assert result.returncode == 2
    assert result.stderr.strip() == "testbed: error: GT_REMOTE_TESTBED=tiny is not a mode; use full (the default, for make test) or demo (for make demo)"
    assert not calls.exists()


def test_make_demo_uses_the_demo_mode_and_make_test_the_full_one() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^demo: .*\btestbed-demo\b", makefile, re.M) and not re.search(r"^demo: .*\btestbed\b(?!-)", makefile, re.M)
    assert re.search(r"^testbed-demo:\n\tGT_REMOTE_TESTBED=demo bash docker/testbed.sh$", makefile, re.M)
    assert re.search(r"^test: .*\btestbed\b", makefile, re.M)
