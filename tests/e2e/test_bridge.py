"""Exec bridges (gt_remote/remote/bridge.py), for an sshd that forwards nothing where the relay
cannot run: the remote command carries one connection to the server with whatever the remote
has, python3, socat, nc or bash's /dev/tcp, in that order, and says in one line when it has
none. Run inside the test container exactly as sshd would run it (the same command line and
stdin), with a PATH that holds only the program under test."""

from __future__ import annotations

import secrets
import shlex

import pytest

from gt_remote.remote import bridge, scripts
from tests.testbed import USER, SshHost, wait_for

PORT = 7777
SOCKET = "/tmp/bridge-test.sock"
BASICS = ("sh", "dd", "cat", "grep", "printf", "sleep", "mktemp", "mkfifo", "rm")
# A server that reads a 5-byte request, answers, and closes: every bridge ends on its own.
SERVER = r"""
import os, socket, sys, threading
def serve(listener):
    while True:
        conn, _ = listener.accept()
        data = b""
        while len(data) < 5:
            chunk = conn.recv(5 - len(data))
            if not chunk: break
            data += chunk
        conn.sendall(b"got " + data)
        conn.close()
tcp = socket.create_server(("127.0.0.1", %d))
if os.path.exists("%s"): os.unlink("%s")
unix = socket.socket(socket.AF_UNIX); unix.bind("%s"); unix.listen(8)
threading.Thread(target=serve, args=(tcp,), daemon=True).start()
serve(unix)
""" % (PORT, SOCKET, SOCKET, SOCKET)


def only(host: SshHost, tool: str | None) -> str:
    """A directory for PATH with the basics and `tool` alone (linked to the real programs)."""
    directory = f"/tmp/only-{tool or 'nothing'}"
    links = " ".join(f"ln -sf \"$(command -v {name})\" {directory}/{name};" for name in (*BASICS, *([tool] if tool else [])))
    host.sh(f"mkdir -p {directory} && {links}", user=USER)
    return directory


def bridged(host: SshHost, kind: str, where: str, tool: str | None) -> str:
    token = secrets.token_hex(8)
    command, text = scripts.data_command(bridge.BRIDGE_SCRIPT, (kind, where, bridge.PYTHON_BRIDGE), "~/.local/share", token)
    host.container.copy_into_container(text + b"hello", "/tmp/bridge.in", 0o644)
    out = host.sh(f"cd /tmp && PATH={only(host, tool)} sh -c {shlex.quote(command)} < /tmp/bridge.in; true", user=USER)
    marker = scripts.MARKER_PREFIX + token
    assert marker in out, out
    return out.split(marker, 1)[1].lstrip("\n")


@pytest.fixture
def served(ssh_host: SshHost) -> SshHost:
    ssh_host.spawn(f"exec python3 -c {shlex.quote(SERVER)}", user=USER)
    wait_for(lambda: ssh_host.exec(f"test -S {SOCKET}")[0] == 0, 10, "the test server")
    return ssh_host


@pytest.mark.parametrize("tool", ["python3", "socat", "nc", "bash"])
def test_each_program_carries_a_connection_to_a_port(served: SshHost, tool: str) -> None:
    assert bridged(served, "tcp", str(PORT), tool) == "GT-REMOTE-BRIDGE-READY\ngot hello"


@pytest.mark.parametrize("tool", ["python3", "socat", "nc"])
def test_each_program_that_can_reaches_the_servers_unix_socket(served: SshHost, tool: str) -> None:
    assert bridged(served, "unix", SOCKET, tool) == "GT-REMOTE-BRIDGE-READY\ngot hello"


def test_with_none_of_them_the_answer_is_one_line_naming_what_is_missing(served: SshHost) -> None:
    assert bridged(served, "tcp", str(PORT), None).strip() == f"bridge_error=none of python3, socat, nc or bash is there to reach {PORT}"
    assert bridged(served, "unix", SOCKET, "bash").strip() == f"bridge_error=none of python3, socat, nc or bash is there to reach {SOCKET}", "bash has no Unix sockets"


def test_python3_says_when_the_server_is_not_there(served: SshHost) -> None:
    assert bridged(served, "unix", "/tmp/no-such.sock", "python3").startswith("bridge_error=cannot reach /tmp/no-such.sock")


@pytest.mark.parametrize("tool", ["bash", "nc"])
def test_a_bridge_ends_when_its_input_does_though_the_server_stays(served: SshHost, tool: str) -> None:
    """A server that never closes (ccmux keeps a client's connection): once the laptop's side
    ends, the bridge ends too, and leaves no process behind on the gaming PC."""
    served.spawn(f"exec python3 -c {shlex.quote(SILENT_SERVER)}", user=USER)
    wait_for(lambda: served.exec(f"python3 -c {shlex.quote(CONNECTS % SILENT_PORT)}")[0] == 0, 10, "the silent server")
    bridged(served, "tcp", str(SILENT_PORT), tool)  # returns once the bridge's command has ended
    wait_for(lambda: served.exec("pgrep -u gamer -x cat")[0] != 0, 15, "no bridge process left")


SILENT_PORT = 7778
CONNECTS = "import socket; socket.create_connection(('127.0.0.1', %d), timeout=2).close()"
SILENT_SERVER = r"""
import socket, threading, time
listener = socket.create_server(("127.0.0.1", %d))
held = []
while True:
    conn, _ = listener.accept()
    held.append(conn)  # read nothing, answer nothing, never close
""" % SILENT_PORT
