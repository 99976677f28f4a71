"""The command line as a whole: usage errors are one line with exit 2, help and version exit 0,
a missing config file is named, and an output that is closed or cannot be written is no crash."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Gt
from tests.helpers import one_error_line

# --- usage errors -----------------------------------------------------------------------

USAGE_ERRORS = [
    (["up"], "missing argument 'HOST'; see 'gt-remote up --help'"),
    (["exec", "gaming-pc"], "missing argument 'COMMAND...'; see 'gt-remote exec --help'"),
    (["up", "gaming-pc", "--bogus"], "no such option '--bogus'; see 'gt-remote up --help'"),
    (["--verbos", "status"], "no such option '--verbos'; did you mean one of: '--verbose', '--version'? see 'gt-remote --help'"),
    (["up", "gaming-pc", "--remote-port", "abc"], "invalid value for '--remote-port': 'abc' is not a valid integer; see 'gt-remote up --help'"),
    (["env", "gaming-pc", "--shell", "tcsh"], "invalid value for '--shell': 'tcsh' is not one of 'sh', 'bash', 'zsh', 'fish'; see 'gt-remote env --help'"),
    (["satus"], "no such command 'satus'; did you mean 'status'? see 'gt-remote --help'"),
    (["service", "instal", "gaming-pc"], "no such command 'instal'; did you mean one of: 'install', 'uninstall'? see 'gt-remote service --help'"),
    (["sync", "gaming-pc", "--push", "--pull"], "--push and --pull go opposite ways; run 'gt-remote sync gaming-pc --push' and then 'gt-remote sync gaming-pc --pull'"),
    (["down", "gaming-pc", "--all"], "--all stops every host, so it takes no HOST (got 'gaming-pc'); run 'gt-remote down gaming-pc' for that host, or 'gt-remote down --all' for all"),
    (["-v", "-q", "status"], "-v and -q contradict each other; pass one of them"),
]


def _gone_reader() -> Any:
    """A pipe's writing end whose reader went away: writing it gets EPIPE."""
    reader, writer = os.pipe()
    os.close(reader)
    return os.fdopen(writer, "w")


@pytest.mark.parametrize(("args", "message"), USAGE_ERRORS, ids=[" ".join(args) for args, _ in USAGE_ERRORS])
def test_usage_errors_are_one_line_with_exit_2(gt: Gt, args: list[str], message: str) -> None:
    result = gt(*args)
    assert result.returncode == 2
    assert result.stderr == f"gt-remote: error: {message}\n"


def test_missing_config_file_is_an_error_like_a_missing_ssh_config(gt: Gt, tmp_path: Path) -> None:
    result = gt("--config", str(tmp_path / "nope.toml"), "status")
    assert result.returncode == 2
    assert f"config file {tmp_path / 'nope.toml'} does not exist" in one_error_line(result.stderr)
    assert len(result.stderr.splitlines()) == 1


def test_help_and_version_still_exit_0(gt: Gt) -> None:
    assert gt("--help").returncode == 0 and "Usage:" in gt("--help").stdout
    assert gt("-V").stdout.startswith("gt-remote, version")


def test_a_closed_output_is_not_a_crash(gt: Gt) -> None:
    """`gt-remote -V >&-` (stdout closed before the command started): Python has no stdout
    object at all, and the command's own exit must not trip over it."""
    closed = subprocess.run(["sh", "-c", 'exec "$@" >&-', "sh", sys.executable, "-m", "gt_remote", "-V"],
                            env=gt.env, capture_output=True, text=True, timeout=120)
    assert (closed.returncode, closed.stderr) == (0, "")


@pytest.mark.parametrize("args", [["-V"], ["--help"], ["status"], ["completion", "bash"]])
def test_an_output_that_cannot_be_written_is_one_line(gt: Gt, args: list[str]) -> None:
    """`gt-remote status > /dev/full`: the cause and the fix on stderr, not click's traceback."""
    full = subprocess.run(["sh", "-c", 'exec "$@" > /dev/full', "sh", sys.executable, "-m", "gt_remote", *args],
                          env=gt.env, capture_output=True, text=True, timeout=120)
    assert full.returncode == 1
    assert full.stderr == "gt-remote: error: cannot write the output: No space left on device; free space where it goes, or redirect it elsewhere\n"


def test_env_still_says_why_when_its_output_cannot_be_written(gt: Gt) -> None:
    """The failing line for `eval` cannot be written either; the error on stderr still is."""
    for name, open_output in {"a full disk": lambda: open("/dev/full", "w"), "a reader that is gone": _gone_reader}.items():
        with open_output() as output:
            failed = subprocess.run([sys.executable, "-m", "gt_remote", "env", "gamign-pc"], stdout=output,
                                    env=gt.env, stderr=subprocess.PIPE, text=True, timeout=120)
        assert failed.returncode == 1, name
        assert failed.stderr == "gt-remote: error: gamign-pc is not up; run 'eval \"$(gt-remote up gamign-pc)\"' first\n", name

