"""#15.7: every parser that reads bytes from outside, fuzzed (the relay's are in the relay's tests).

Each property: whatever the input, the parser returns a value or raises the typed error it
documents (a GtRemoteError subclass), never another exception; it finishes (a deadline per
example, and a timeout on anything that waits); and what it keeps is bounded by a limit it
states. The whole file runs in well under 30 s.
"""

from __future__ import annotations

import asyncio
import json
import math
import socket
import string
import threading
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gt_remote.base.addresses import TcpAddress, UnixAddress, normalize_local, parse_address, require_loopback
from gt_remote.base.config import HostSettings, load_config, resolve
from gt_remote.base.errors import AddressError, ConfigError, GtRemoteError, PingFailed, UsageError
from gt_remote.base.sanitize import MAX_DIGITS, ascii_int, visible
from gt_remote.ccmux import wire
from gt_remote.cli import _status_table
from gt_remote.host import lifecycle
from gt_remote.remote import server as remote_server
from gt_remote.remote.probe import build_of, facts_from_fields
from gt_remote.remote.scripts import parse_fields
from gt_remote.runtime.control import MAX_REPLY_BYTES, decode_reply, request

FUZZ = settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
FEW = settings(max_examples=40, deadline=3000, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# Text that hits the interesting corners: digits of every script, controls, separators.
ODD = st.sampled_from(["²", "٣", "\x1b", "\x00", "\n", "\r", "=", ":", "[", "]", "/", "%", "@", "\u202e", "\udc80", "9" * 30, "-", " ", "\t", "~", "~nobody-here/", "a" * 300])
TEXT = st.lists(st.one_of(st.text(max_size=8), ODD), max_size=12).map("".join)
JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), TEXT)
JSON = st.recursive(JSON_LEAF, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)), max_leaves=12)


# --- the wire frame reader (ccmux Ping through the tunnel) ----------------------------------


class _Sink:
    def write(self, data: bytes) -> None:
        pass


def _frames(payloads: list[bytes]) -> bytes:
    return b"".join(len(p).to_bytes(4, "big") + p for p in payloads)


WIRE_BYTES = st.one_of(
    st.binary(max_size=256),
    st.lists(st.binary(max_size=64), max_size=5).map(_frames),  # well-framed, odd variants
    st.tuples(st.integers(0, 2**32 - 1), st.binary(max_size=64)).map(lambda t: t[0].to_bytes(4, "big") + t[1]),  # any length field
)


@FUZZ
@given(data=WIRE_BYTES)
def test_ping_on_any_bytes_answers_or_raises_ping_failed(data: bytes) -> None:
    async def run() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        try:
            rtt = await wire.ping(reader, _Sink(), timeout=1.0)
        except PingFailed:
            return
        assert rtt >= 0 and wire.PONG_VARIANT.to_bytes(4, "little") in data

    asyncio.run(run())


@FUZZ
@given(payload=st.binary(max_size=64))
def test_server_status_decoder_takes_any_payload(payload: bytes) -> None:
    try:
        status = wire.decode_server_status(payload)
    except PingFailed:
        return
    assert len(payload) == 47 and status.commit_seq >= 0


def test_a_frame_over_the_limit_is_refused_before_it_is_read() -> None:
    """A 4 GiB length field: refused from the header, nothing buffered for it."""
    async def run() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data((2**32 - 1).to_bytes(4, "big"))
        with pytest.raises(PingFailed, match="over the 16 MiB limit"):
            await wire.read_frame(reader)

    asyncio.run(run())


# --- the probe's key=value lines -------------------------------------------------------------


@FUZZ
@example(stdout="pid=²\nother=٣:1")  # #15.4: isdigit() passed these, int() refused them: "internal error"
@example(stdout="pid=" + "9" * 5000 + "\nother=1:" + "9" * 5000)  # past int()'s 4,300-digit limit
@given(stdout=st.lists(st.one_of(TEXT, st.tuples(st.sampled_from(["pid", "other", "version", "running", "running_version", "path", "arch", "os"]), TEXT).map("=".join)), max_size=12).map("\n".join))
def test_probe_output_of_any_far_side_parses(stdout: str) -> None:
    fields = parse_fields(stdout)
    assert all(key.isidentifier() and "\n" not in value for key, value in fields.items())
    facts = facts_from_fields(fields)
    for number in (facts.pid, facts.other_pid, facts.other_port):
        assert number is None or 0 <= number < 10**MAX_DIGITS
    assert facts.other_port is None or facts.other_port < 10**5
    for shown in (facts.version, facts.running_version):
        assert shown is None or shown == visible(shown)


@FUZZ
@given(log_tail=st.lists(TEXT, max_size=20), path=TEXT)
def test_a_servers_log_tail_becomes_a_typed_error_with_visible_text(log_tail: list[str], path: str) -> None:
    """What the remote server logged, quoted in `up`'s error when it exits or never answers."""
    for error in (remote_server._exited("ccmux-server", 9999, "gaming-pc", log_tail), remote_server._never_answered("ccmux-server", 9999, "gaming-pc", log_tail)):
        assert isinstance(error, GtRemoteError)
        assert error.cause == visible(error.cause)
    build = build_of(path)
    assert build is None or "/" not in build


@FUZZ
@given(text=st.one_of(TEXT, st.text(alphabet=string.digits, max_size=40), st.none()))
def test_ascii_int_never_raises_and_reads_only_ascii_digits(text: str | None) -> None:
    number = ascii_int(text)
    if number is not None:
        assert text is not None and text.isascii() and text.isdigit() and str(number) == text.lstrip("0").rjust(1, "0")


# --- the address parser ----------------------------------------------------------------------


ADDRESS = st.one_of(
    TEXT,
    st.tuples(st.sampled_from(["tcp://", "unix://", "tcp://[", "udp://", ""]), TEXT, st.sampled_from(["", ":", "]:", ":9999"]), TEXT).map("".join),
)


@FUZZ
@example(text="tcp://127.0.0.1:²")  # isdigit() took it, int() did not
@example(text="tcp://127.0.0.1:" + "9" * 5000)
@example(text="tcp://[::1%eth0]:9")
@given(text=ADDRESS)
def test_address_parser_takes_any_text(text: str) -> None:
    try:
        address = parse_address(text)
    except AddressError as error:
        assert error.fix.startswith("write it like")
        return
    assert parse_address(address.url) == address  # what it prints, it reads back the same
    if isinstance(address, TcpAddress):
        assert 1 <= address.port <= 65535
    else:
        assert isinstance(address, UnixAddress) and address.path.startswith("/") and "\0" not in address.path
    try:
        normalize_local(require_loopback(address))
    except AddressError:
        assert not address.is_loopback


# --- the config loader -----------------------------------------------------------------------


def _check_settings(result: HostSettings) -> None:
    assert 1 <= result.remote_port <= 65535
    assert math.isfinite(result.keepalive) and result.keepalive > 0
    assert math.isfinite(result.resume_window) and result.resume_window > 0
    assert all(isinstance(item, str) and item for item in result.sync)
    parse_address(result.local_url)


TOML_VALUE = st.one_of(JSON_LEAF, st.lists(JSON_LEAF, max_size=3))
TABLE = st.dictionaries(st.sampled_from(["ssh", "remote_port", "local", "server", "server_binary", "install_command", "keepalive", "sync", "resume", "resume_window", "unknown"]), TOML_VALUE, max_size=6)


@FUZZ
@example(table={"server_binary": "~nobody-here/ccmux-server"})  # expanduser's RuntimeError
@example(table={"server_binary": "/" + "a" * 5000})  # ENAMETOOLONG from is_file()
@example(table={"sync": 5})  # iterated: TypeError
@example(table={"keepalive": math.nan})
@example(table={"resume_window": math.inf})
@given(table=TABLE)
def test_resolve_takes_any_table_of_values(table: dict[str, Any]) -> None:
    try:
        result = resolve("gaming-pc", {"gaming-pc": table}, {}, None)
    except UsageError:
        return  # ConfigError is one
    _check_settings(result)


def _toml_snippets() -> st.SearchStrategy[str]:
    keys = st.sampled_from(["ssh", "remote_port", "local", "keepalive", "resume_window", "sync", "hosts", "server"])
    values = st.sampled_from(['"x"', "1", "-0", "inf", "nan", "1e400", "[1, [2]]", "{a = 1}", '"\\u001b"', "true", "1979-05-27", "0x10", '"""\n"""', "'²'"])
    line = st.one_of(st.tuples(keys, values).map(" = ".join), st.sampled_from(["[hosts.gaming-pc]", "[hosts]", "[[hosts.a]]", "[hosts.'x y']", "hosts = 1"]), TEXT)
    return st.lists(line, max_size=8).map("\n".join)


@FUZZ
@example(content=b"\xff\xfe")  # not UTF-8: UnicodeDecodeError got past the TOML error handler
@example(content=b"[hosts.a]\nsync = 5\nkeepalive = nan\n")
@given(content=st.one_of(st.binary(max_size=200), _toml_snippets().map(lambda t: t.encode("utf-8", "surrogatepass"))))
def test_config_loader_takes_any_file(content: bytes, tmp_path_factory: pytest.TempPathFactory) -> None:
    path = tmp_path_factory.getbasetemp() / "fuzz-config.toml"
    path.write_bytes(content)
    path.chmod(0o600)
    try:
        hosts = load_config(path)
    except ConfigError as error:
        assert str(path) in error.cause
        return
    for name in hosts:
        try:
            _check_settings(resolve(name, hosts, {}, None))
        except UsageError:
            pass


def test_deeply_nested_config_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("x = " + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(ConfigError):
        load_config(path)


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
    if not lifecycle._well_formed(status):
        return
    settings_ = HostSettings("gaming-pc", "gaming-pc", local_url="tcp://127.0.0.1:9999")
    try:
        lifecycle._check_same(settings_, status)
    except UsageError:
        pass
    _status_table([status])


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

