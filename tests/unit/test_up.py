"""`gt-remote up` failing before any connection, with no container: a malformed or non-loopback
--local, a port in use, a bad config file, an unknown host, a refused connection, Ctrl-C while
connecting, a regular file or symlink at the local socket path; each one error line with a fix
and nothing left behind."""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Gt
from tests.helpers import assert_nothing_left, local_files, one_error_line, rows, sock_dir, start_up, supervisor_processes, tcp_port_free
from tests.testbed import STANDIN, free_loopback_port, wait_for

INTERRUPT_DEADLINE = 5.0  # well under the 10 s connect timeout a late Ctrl-C used to wait for


@pytest.fixture
def silent_host(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A host whose port accepts TCP connections and never says a word (no SSH banner)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    config = tmp_path / "silent_ssh_config"
    config.write_text(f"Host silent-pc\n    HostName 127.0.0.1\n    Port {listener.getsockname()[1]}\n    User gamer\n")
    yield "silent-pc", config
    listener.close()


PRECIOUS = b"thesis draft, chapter 3\n\x00\xff binary tail\n"


def refused(gt: Gt, path: Path, untouched_host: Path) -> str:
    """`up` with --local at `path`, which must fail before reaching any remote: its error line.
    The host resolves (an unknown one would be named first) and is never dialled: the local
    listener is bound first, and that is what refuses."""
    result = gt("up", "gaming-pc", "--local", f"unix://{path}", timeout=60, ssh_config=untouched_host)
    assert result.returncode == 1, (result.stdout, result.stderr)
    line = one_error_line(result.stderr)
    assert f"unix://{path}" in line and "not a socket" in line and f"move {path} away" in line, line
    assert supervisor_processes(gt.env["XDG_RUNTIME_DIR"]) == []
    assert list((gt.home / ".local/state/gt-remote/hosts").glob("*.json")) == []
    return line


def test_unknown_host(gt: Gt, untouched_host: Path) -> None:
    port = free_loopback_port()  # not the default 9999, which another run's tunnel may hold
    result = gt("up", "no-such-host.invalid", "--local", f"tcp://127.0.0.1:{port}", ssh_config=untouched_host)
    assert result.returncode == 1
    assert "cannot resolve host 'no-such-host.invalid'" in one_error_line(result.stderr)
    assert result.stdout == "false\n"  # no exports: only the line that fails the eval
    assert_nothing_left(gt, port)


@pytest.mark.parametrize(
    ("url", "part"),
    [
        ("http://127.0.0.1:9999", "unknown scheme 'http'"),
        ("tcp://127.0.0.1", "missing port"),
        ("tcp://127.0.0.1:70000", "port 70000 is out of range"),
        ("unix://relative/x.sock", "is relative"),
        ("127.0.0.1:9999", "missing scheme"),
    ],
)
def test_malformed_local_url(gt: Gt, untouched_host: Path, url: str, part: str) -> None:
    result = gt("up", "gaming-pc", "--server-binary", str(STANDIN), "--local", url, ssh_config=untouched_host)
    assert result.returncode == 2
    line = one_error_line(result.stderr)
    assert part in line and "write it like " in line
    assert_nothing_left(gt, port=None)


def test_non_loopback_local(gt: Gt, untouched_host: Path) -> None:
    result = gt("up", "gaming-pc", "--server-binary", str(STANDIN), "--local", "tcp://192.0.2.1:9999", ssh_config=untouched_host)
    assert result.returncode == 2
    assert "not loopback" in one_error_line(result.stderr)
    assert_nothing_left(gt, port=None)


def test_connection_refused(gt: Gt, tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"  # a port nothing listens on: no container needed to be refused
    config.write_text(f"Host gaming-pc\n    HostName 127.0.0.1\n    Port {free_loopback_port()}\n    User gamer\n")
    port = free_loopback_port()
    result = gt("up", "gaming-pc", "--server-binary", str(STANDIN), "--local", f"tcp://127.0.0.1:{port}", ssh_config=config)
    assert result.returncode == 1
    assert "refused the connection" in one_error_line(result.stderr)
    assert_nothing_left(gt, port)


def test_local_port_in_use(gt: Gt, untouched_host: Path) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        result = gt("up", "gaming-pc", "--server-binary", str(STANDIN), "--local", f"tcp://127.0.0.1:{port}", ssh_config=untouched_host)
        assert result.returncode == 1
        assert f"local address tcp://127.0.0.1:{port} is already in use" in one_error_line(result.stderr)
        assert_nothing_left(gt, port=None)  # the holder still has it
        # The local check comes first: untouched_host checks gaming-pc was never dialled, so
        # nothing was uploaded or started there.
    finally:
        holder.close()


def test_a_mistyped_host_is_named_before_a_held_local_port(gt: Gt, untouched_host: Path) -> None:
    """`up gamng-pc` (a typo, in no ssh_config, resolving nowhere) while another program holds
    the default local address, as the user's tunnel to gaming-pc holds 127.0.0.1:9999: the
    typo is the error, not the address. About the default, so no --local: a free remote port
    stands for 9999, its default local address a laptop port this test holds."""
    try:
        socket.getaddrinfo("gamng-pc", 22)
        pytest.skip("'gamng-pc' resolves on this machine (a DNS that answers every name): nothing to mistype")
    except socket.gaierror:
        pass
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        result = gt("up", "gamng-pc", "--remote-port", str(port), ssh_config=untouched_host, own_local=False)
        assert result.returncode == 1
        line = one_error_line(result.stderr)
        assert "cannot resolve host 'gamng-pc'" in line and "in use" not in line, line
        assert result.stdout == "false\n"
        assert_nothing_left(gt, port=None)  # the holder still has it
    finally:
        holder.close()


def test_missing_ssh_config_file(gt: Gt, tmp_path: Path) -> None:
    result = gt("up", "gaming-pc", ssh_config=tmp_path / "nope")
    assert result.returncode == 2
    assert "does not exist" in one_error_line(result.stderr)


def test_bad_config_file(gt: Gt, untouched_host: Path, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[hosts.gaming-pc]\nremote_prot = 9999\n")
    result = gt("--config", str(config), "up", "gaming-pc", ssh_config=untouched_host)
    assert result.returncode == 2
    assert "unknown key(s) remote_prot" in one_error_line(result.stderr)


# --- Ctrl-C and SIGTERM during the bring-up ----------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_while_connecting_to_a_host_that_never_answers(gt: Gt, silent_host: tuple[str, Path], signum: int) -> None:
    name, config = silent_host
    port = free_loopback_port()
    proc = start_up(gt, name, "--local", f"tcp://127.0.0.1:{port}", ssh_config=config)
    try:
        # Status is true from the first moment: connecting, with the step; text and JSON agree.
        [row] = wait_for(lambda: rows(gt), 10, "the connecting supervisor in status --json")  # type: ignore[misc]
        assert row["host"] == name and row["state"] == "connecting" and row["step"] == "connecting"
        text = gt("status")
        assert text.returncode == 1 and text.stdout.splitlines()[0] == f"{name}: connecting (connecting)"
        for command in (["env", name], ["reconnect", name]):  # not up yet, said so, not "refused"
            early = gt(*command)
            assert early.returncode == 1 and f"{name} is still coming up (connecting)" in one_error_line(early.stderr)
        proc.send_signal(signum)  # the `up` this test started, by pid
        wait_for(lambda: proc.poll() is not None, INTERRUPT_DEADLINE, "up to end after the signal")
    finally:
        if proc.poll() is None:
            proc.kill()
        stdout, stderr = proc.communicate()
    assert proc.returncode == 130, stderr
    assert stdout.strip() == "false"
    assert "interrupted" in stderr
    wait_for(lambda: supervisor_processes(gt.env["XDG_RUNTIME_DIR"]) == [], 10, "the supervisor to exit")
    assert local_files(gt) == []
    assert tcp_port_free(port)
    assert rows(gt) == []


def test_a_regular_file_at_the_local_path_survives_and_up_says_so(gt: Gt, untouched_host: Path) -> None:
    path = sock_dir(gt) / "ccmux.sock"
    path.write_bytes(PRECIOUS)
    before = os.lstat(path)
    line = refused(gt, path, untouched_host)
    assert "a regular file" in line, line
    assert path.read_bytes() == PRECIOUS
    after = os.lstat(path)
    assert (after.st_ino, after.st_mtime_ns, after.st_mode) == (before.st_ino, before.st_mtime_ns, before.st_mode)


@pytest.mark.parametrize("target_kind", ["file", "dead socket"])
def test_a_symlink_at_the_local_path_is_neither_followed_nor_removed(gt: Gt, untouched_host: Path, target_kind: str) -> None:
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
    line = refused(gt, link, untouched_host)
    assert "a symbolic link" in line, line
    assert link.is_symlink() and os.readlink(link) == str(target)
    if target_kind == "file":
        assert target.read_bytes() == PRECIOUS
    else:
        assert target.is_socket()


# --- a failed up leaves nothing behind ----------------------------------------------------


def test_failed_up_of_a_mistyped_host_leaves_no_local_files(gt: Gt, tmp_path: Path) -> None:
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text("Host *\n    ConnectTimeout 5\n")
    local = f"tcp://127.0.0.1:{free_loopback_port()}"  # not 9999, which another run may hold
    result = gt("up", "no-such-host.invalid", "--remote-port", "9997", "--local", local, ssh_config=ssh_config)
    assert result.returncode != 0
    one_error_line(result.stderr)
    assert local_files(gt) == []
    again = gt("down", "no-such-host.invalid")
    assert again.returncode == 0 and local_files(gt) == []


def test_non_loopback_local_is_refused(gt: Gt, untouched_host: Path) -> None:
    result = gt("up", "gaming-pc", "--server-binary", str(STANDIN), "--local", "tcp://0.0.0.0:9999", ssh_config=untouched_host)
    assert result.returncode == 2
    assert "not loopback" in result.stderr and result.stderr.count("\n") == 1
    assert result.stdout == "false\n"  # no exports: only the line that fails the eval
    # untouched_host: gaming-pc was never dialled, so nothing can have started there

