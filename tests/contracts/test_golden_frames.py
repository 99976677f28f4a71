"""Frames made by ccmux's own codec, decoded and re-encoded by ours and by the stand-in's.

The oracle is tests/data/ccmux-golden-frames.json, copied unchanged from the project's shared
reference folder (shared/ccmux-golden-frames.json, built from ccmux's protocol crate; see
shared/ccmux-facts.md), so a clone needs nothing beside it. Both the wire module and the stand-in must read every frame to
the codec's fields and write the same bytes back, so neither can drift from the real codec."""

from __future__ import annotations

import asyncio
import importlib.machinery
import importlib.util
import json
import os
import struct
import subprocess
import sys
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest

from gt_remote.ccmux import wire
from tests.helpers import ECHO_FRAME, STANDIN_ECHO
from tests.reaper import short_tempdir
from tests.testbed import REPO, STANDIN, free_loopback_port

GOLDEN = REPO / "tests" / "data" / "ccmux-golden-frames.json"


def golden_frames() -> list[dict[str, Any]]:
    frames: list[dict[str, Any]] = json.loads(GOLDEN.read_text())["frames"]
    return frames


FRAMES = golden_frames()


def message_name(entry: dict[str, Any]) -> str:
    """'ServerMessage::Error/InvalidOperation' -> 'Error'."""
    return str(entry["name"]).split("::", 1)[1].split("/", 1)[0]


def expected_fields(entry: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in entry["fields"].items() if key != "note"}


def load_standin() -> ModuleType:
    """The stand-in script as a module (it has no .py suffix; its main only runs as a script)."""
    loader = importlib.machinery.SourceFileLoader("ccmux_server_standin", str(STANDIN))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


STANDIN_CODEC = load_standin()


def ids(entry: dict[str, Any]) -> str:
    return str(entry["name"])


def standin_frame(entry: dict[str, Any]) -> bytes | None:
    """What the stand-in sends for this server message, built with its own encoders."""
    name, fields = message_name(entry), entry["fields"]
    if name == "Error":
        return None if fields["details"] is not None else STANDIN_CODEC.error_frame(fields["code_index"], fields["message"])
    if name == "ServerStatus":
        return STANDIN_CODEC.server_status_frame(
            fields["commit_seq"], fields["client_count"], fields["session_count"], tuple(fields["replay_range"]), fields["wal_healthy"], fields["checkpoint_healthy"], fields["human_control_active"]
        )
    if name == "Connected":
        return STANDIN_CODEC.connected_frame() if fields == {"server_version": STANDIN_CODEC.VERSION, "protocol_version": 1} else None
    if name == "Pong":
        return STANDIN_CODEC.frame(struct.pack("<I", STANDIN_CODEC.S_PONG))
    if name == "SessionList":
        return STANDIN_CODEC.frame(struct.pack("<IQ", STANDIN_CODEC.S_SESSION_LIST, 0))
    return None


SERVER_FRAMES = [entry for entry in FRAMES if entry["direction"] == "server->client" and standin_frame(entry) is not None]


# --- the running stand-in answers with the real server's bytes -----------------------------


@pytest.fixture
def standin_port() -> Iterator[int]:
    runtime = short_tempdir("gtr-golden-")
    port = free_loopback_port()
    proc = subprocess.Popen([sys.executable, str(STANDIN), "--listen-tcp", f"127.0.0.1:{port}"], env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)}, stderr=subprocess.PIPE, text=True)
    try:
        wait_listening(proc)
        yield port
    finally:
        proc.terminate()  # the process this fixture started
        proc.wait(10)


def wait_listening(proc: subprocess.Popen[str]) -> None:
    """Until the stand-in logs its TCP listener (bound after its Unix socket); no probe
    connection, which its client count would show."""
    assert proc.stderr is not None
    for line in proc.stderr:
        if "listening on tcp" in line:
            return
    raise AssertionError("the stand-in exited before listening on TCP")


def golden(name: str) -> bytes:
    [entry] = [entry for entry in FRAMES if entry["name"] == name]
    return bytes.fromhex(entry["hex"])


async def exchange(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        payload = await asyncio.wait_for(wire.read_frame(reader), 10)
        return struct.pack(">I", len(payload)) + payload
    finally:
        writer.close()


def test_the_oracle_holds_every_message_we_speak() -> None:
    names = {(entry["direction"], message_name(entry)) for entry in FRAMES}
    assert {("client->server", name) for name in wire.CLIENT_VARIANTS} <= names
    assert {("server->client", name) for name in wire.SERVER_VARIANTS} <= names
    assert all(entry["roundtrip_decoded_equal"] for entry in FRAMES)


@pytest.mark.parametrize("entry", FRAMES, ids=ids)
def test_wire_module_decodes_and_reencodes_the_real_codecs_frame(entry: dict[str, Any]) -> None:
    data = bytes.fromhex(entry["hex"])
    payload = wire.split_frame(data)
    assert len(payload) == entry["length_prefix"]
    client = entry["direction"] == "client->server"
    message = wire.decode_client_message(payload) if client else wire.decode_server_message(payload)
    assert message.name == message_name(entry)
    assert message.fields == expected_fields(entry)
    assert (wire.encode_client_message(message) if client else wire.encode_server_message(message)) == data


@pytest.mark.parametrize("entry", FRAMES, ids=ids)
def test_standin_parses_the_real_codecs_frame(entry: dict[str, Any]) -> None:
    payload = bytes.fromhex(entry["hex"])[4:]
    parse = STANDIN_CODEC.parse_client if entry["direction"] == "client->server" else STANDIN_CODEC.parse_server
    name, fields = parse(payload)
    assert name == message_name(entry)
    assert fields == expected_fields(entry)


@pytest.mark.parametrize("entry", SERVER_FRAMES, ids=ids)
def test_standin_writes_the_real_codecs_bytes(entry: dict[str, Any]) -> None:
    assert standin_frame(entry) == bytes.fromhex(entry["hex"])


def test_standin_covers_every_server_message_it_sends() -> None:
    assert {message_name(entry) for entry in SERVER_FRAMES} == set(wire.SERVER_VARIANTS)


@pytest.mark.parametrize(
    ("request_name", "reply_name"),
    [
        ("ClientMessage::Connect/protocol_version=2/Tui", "ServerMessage::Error/ProtocolMismatch/real-server-text"),
        ("ClientMessage::Connect/Tui", "ServerMessage::Connected"),
        ("ClientMessage::Ping", "ServerMessage::Pong"),
        ("ClientMessage::ListSessions", "ServerMessage::SessionList/empty"),
    ],
)
def test_running_standin_answers_real_frames_with_real_bytes(standin_port: int, request_name: str, reply_name: str) -> None:
    assert asyncio.run(exchange(standin_port, golden(request_name))) == golden(reply_name)


def test_running_standin_status_decodes_with_the_wire_module(standin_port: int) -> None:
    reply = asyncio.run(exchange(standin_port, golden("ClientMessage::GetServerStatus")))
    message = wire.decode_server_message(wire.split_frame(reply))
    assert message.name == "ServerStatus" and message.fields["client_count"] == 1


def test_the_echo_frame_is_a_standin_message() -> None:
    """The bulk transfer above rides the stand-in's echo message: a frame of the wire format."""
    assert wire.split_frame(ECHO_FRAME)[:4] == struct.pack("<I", STANDIN_ECHO)

