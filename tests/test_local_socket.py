"""`--local unix://PATH` makes room only for a dead socket (#27).

A path given by mistake (a document, a symlink to one) must survive `up` byte for byte: the
listener removes only a socket nothing answers on, looked at with lstat so a symlink is never
followed, and refuses anything else with one line naming the path and what to do.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from tests.conftest import Gt
from tests.helpers import answers, one_error_line, supervisor_processes
from tests.testbed import SshHost

PRECIOUS = b"thesis draft, chapter 3\n\x00\xff binary tail\n"


def sock_dir(gt: Gt) -> Path:
    """A private directory with a short path: sun_path holds about 100 bytes."""
    path = Path(gt.env["XDG_RUNTIME_DIR"]) / "s"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def refused(gt: Gt, path: Path) -> str:
    """`up` with --local at `path`, which must fail before reaching any remote: its error line.
    No host is needed: the local listener is bound first, and that is what refuses."""
    result = gt("up", "gaming-pc", "--local", f"unix://{path}", timeout=60)
    assert result.returncode == 1, (result.stdout, result.stderr)
    line = one_error_line(result.stderr)
    assert f"unix://{path}" in line and "not a socket" in line and f"move {path} away" in line, line
    assert supervisor_processes(gt.env["XDG_RUNTIME_DIR"]) == []
    assert list((gt.home / ".local/state/gt-remote/hosts").glob("*.json")) == []
    return line


def test_a_regular_file_at_the_local_path_survives_and_up_says_so(gt: Gt) -> None:
    path = sock_dir(gt) / "ccmux.sock"
    path.write_bytes(PRECIOUS)
    before = os.lstat(path)
    line = refused(gt, path)
    assert "a regular file" in line, line
    assert path.read_bytes() == PRECIOUS
    after = os.lstat(path)
    assert (after.st_ino, after.st_mtime_ns, after.st_mode) == (before.st_ino, before.st_mtime_ns, before.st_mode)


@pytest.mark.parametrize("target_kind", ["file", "dead socket"])
def test_a_symlink_at_the_local_path_is_neither_followed_nor_removed(gt: Gt, tmp_path: Path, target_kind: str) -> None:
    """Even one pointing at a dead socket: what a link points to is the user's business."""
    target = sock_dir(gt) / "t"
    if target_kind == "file":
        target.write_bytes(PRECIOUS)
    else:
        dead = socket.socket(socket.AF_UNIX)
        dead.bind(str(target))
        dead.close()  # bound, never listening: a socket file nothing answers on
    link = sock_dir(gt) / "ccmux.sock"
    link.symlink_to(target)
    line = refused(gt, link)
    assert "a symbolic link" in line, line
    assert link.is_symlink() and os.readlink(link) == str(target)
    if target_kind == "file":
        assert target.read_bytes() == PRECIOUS
    else:
        assert target.is_socket()


def test_a_dead_socket_at_the_local_path_is_replaced(gt: Gt, ssh_host: SshHost) -> None:
    """What the removal is for: a socket left by a supervisor that died is taken over."""
    path = sock_dir(gt) / "ccmux.sock"
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(path))
    dead.close()
    result = gt.up(ssh_host, "--local", f"unix://{path}")
    assert result.returncode == 0, result.stderr
    assert path.is_socket() and not path.is_symlink()
    assert answers(f"unix://{path}"), "our listener answers where the dead socket was"
