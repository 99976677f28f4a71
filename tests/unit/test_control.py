"""Fuzzing the control socket: any reply from a supervisor is an object or no answer, a status
reply is used only when whole, and an endless reply is cut at the cap."""

from __future__ import annotations

import json
import math
import socket
import threading
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gt_remote.base.config import HostSettings
from gt_remote.base.errors import UsageError
from gt_remote.cli import _status_table
from gt_remote.host import client, lifecycle
from gt_remote.runtime.control import MAX_REPLY_BYTES, decode_reply, request
from tests.unit.strategies import FUZZ, JSON_LEAF, TEXT

FEW = settings(max_examples=40, deadline=3000, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


JSON = st.recursive(JSON_LEAF, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)), max_leaves=12)


# --- the control socket's replies --------------------------------------------------------------


STATUS_KEYS = ["host", "state", "local", "remote_port", "supervisor_pid", "server", "settings", "last_error", "last_wake", "exports", "rtt_ms", "uptime_s", "last_recovery_s", "next_attempt_at", "reconnects", "resumable"]


def _real_status() -> dict[str, Any]:
    return {
        "host": "gaming-pc", "destination": "gaming-pc", "state": "up", "local": "tcp://127.0.0.1:9999", "remote_port": 9999, "supervisor_pid": 42,
        "uptime_s": 3.5, "reconnects": 0, "server_restarts": 0, "rtt_ms": 1.25, "server": {"name": "ccmux-server", "version": "0.1.1", "pid": 7, "build": None, "other_build": None},
        "settings": {"server": "ccmux-server", "keepalive": 5.0}, "last_error": None, "since": None, "next_attempt_at": None, "clients": 0, "resumable": True,
        "resumable_reason": None, "streams_open": 0, "streams_resumed": 0, "bytes_replayed": 0, "last_wake": None, "last_recovery_s": None, "exports": [],
    }


STATUS = st.builds(lambda changes: {**_real_status(), **changes}, st.dictionaries(st.sampled_from(STATUS_KEYS), JSON, max_size=3))


REPLY_BYTES = st.one_of(
    st.binary(max_size=200),
    JSON.map(lambda value: json.dumps(value).encode()),
    STATUS.map(lambda status: json.dumps({"ok": True, "status": status}).encode() + b"\n"),
    st.integers(1, 5000).map(lambda depth: b"[" * depth + b"]" * depth),
)


@pytest.fixture
def reply_server(tmp_path: Path) -> Any:
    """A Unix socket that answers each request with whatever the test sets."""
    path = tmp_path / "c.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(8)
    state: dict[str, bytes] = {"reply": b""}

    def serve() -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            with client:
                try:
                    client.recv(65536)
                    client.sendall(state["reply"])
                except OSError:
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield path, state
    listener.shutdown(socket.SHUT_RDWR)
    listener.close()
    thread.join(5)


@FUZZ
@example(data=b"[" * 100_000 + b"]" * 100_000)  # RecursionError is not a ValueError
@example(data=b'{"ok": true, "status": [1]}\n')
@example(data=b"[1]\n")
@example(data=b"\xff\n")
@given(data=REPLY_BYTES)
def test_any_control_reply_is_an_object_or_no_answer(data: bytes) -> None:
    reply = decode_reply(data)
    assert reply is None or isinstance(reply, dict)


@FUZZ
@example(status={**_real_status(), "uptime_s": math.inf})  # int(inf) in the table
@example(status={**_real_status(), "rtt_ms": "fast"})
@example(status={**_real_status(), "last_wake": {"kind": "sleep"}})
@given(status=STATUS)
def test_a_status_reply_is_used_only_when_whole_and_then_never_crashes_its_readers(status: dict[str, Any]) -> None:
    """What `up` (already up), `env`, `exec` and `status` read of a live status."""
    if not client._well_formed(status):
        return
    settings_ = HostSettings("gaming-pc", "gaming-pc", local_url="tcp://127.0.0.1:9999")
    try:
        lifecycle._check_same(settings_, status)
    except UsageError:
        pass
    _status_table([status])


@FEW
@given(data=REPLY_BYTES)
def test_request_over_a_real_socket_returns_an_object_or_none(data: bytes, reply_server: Any) -> None:
    path, state = reply_server
    state["reply"] = data
    reply = request(path, {"op": "status"}, timeout=2.0)
    assert reply is None or isinstance(reply, dict)


def test_an_endless_reply_is_cut_at_the_cap(reply_server: Any) -> None:
    """Memory stays bounded: 3x the cap without a newline is no answer, not 12 MiB held."""
    path, state = reply_server
    state["reply"] = b"x" * (3 * MAX_REPLY_BYTES)
    tracemalloc.start()
    try:
        assert request(path, {"op": "status"}, timeout=5.0) is None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * MAX_REPLY_BYTES + 1024 * 1024

