"""Fuzzing what reads bytes from the other end: the relay's frame reader and hello handler,
and the laptop's frame reader and reply handling. Whatever arrives, the result is frames,
a typed error or an answered-and-closed channel: no other exception, no hang, bounded memory."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gt_remote.protocol import stream as core
from gt_remote.tunnel import resumable
from tests.helpers import load_agent
from tests.unit.helpers import HEADER

agent = load_agent()
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
hello_like = st.fixed_dictionaries(
    {},
    optional={
        "op": st.sampled_from(["new", "resume", "close", "stats", "lease", "load", "nope"]) | json_values,
        "id": st.text(alphabet="0123456789abcdef", min_size=30, max_size=66) | json_values,
        "window": st.integers(min_value=-(10**400), max_value=10**400) | st.floats(allow_nan=True, allow_infinity=True) | json_values,
        "heartbeat": st.floats(allow_nan=True, allow_infinity=True) | json_values,
        "received": st.integers(min_value=-(10**30), max_value=10**30) | json_values,
        "ids": st.lists(st.text(alphabet="0123456789abcdef", min_size=32, max_size=32), max_size=3) | json_values,
        "name": st.text(alphabet="abc./-_\x00", max_size=130) | json_values,
        "ttl": st.integers(min_value=-(10**30), max_value=10**30) | json_values,
    },
)
payloads = st.one_of(
    st.binary(max_size=300),
    hello_like.map(lambda value: json.dumps(value).encode()),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.integers(min_value=1, max_value=3000).map(lambda depth: b"[" * depth + b"]" * depth),
)


def frames_of(pieces: list[tuple[bytes, bytes]]) -> bytes:
    return b"".join(HEADER.pack(kind, len(payload)) + payload for kind, payload in pieces)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({cut % (len(data) + 1) for cut in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


frame_lists = st.lists(st.tuples(st.sampled_from([b"D", b"A", b"E", b"C", b"K", b"H", b"R", b"\x00"]), st.binary(max_size=200)), max_size=8)


@FAST
@given(frame_lists, st.lists(st.integers(min_value=0), max_size=10))
def test_frame_readers_return_the_frames_however_the_bytes_are_split(pieces: list[tuple[bytes, bytes]], cuts: list[int]) -> None:
    data = frames_of(pieces)
    for reader in (agent.FrameReader(), core.FrameReader()):
        got: list[tuple[bytes, bytes]] = []
        for chunk in split(data, cuts):
            got += reader.feed(chunk)
        assert got == pieces
        assert len(reader.buffer) == 0


@FAST
@given(st.binary(max_size=2000), st.lists(st.integers(min_value=0), max_size=10), st.integers(min_value=0, max_value=300))
def test_frame_readers_on_garbage_raise_typed_errors_and_stay_bounded(data: bytes, cuts: list[int], limit: int) -> None:
    for reader, error in ((agent.FrameReader(limit, limit // 2), agent.FrameError), (core.FrameReader(limit, limit // 2), core.FrameError)):
        try:
            for chunk in split(data, cuts):
                reader.feed(chunk)
                assert len(reader.buffer) <= HEADER.size + limit, "a reader may hold at most one frame in progress"
        except error:
            pass


@FAST
@given(payloads)
def test_parse_hello_accepts_or_names_the_problem(payload: bytes) -> None:
    try:
        request = agent.parse_hello(payload)
    except agent.HelloError as error:
        assert str(error)
        return
    assert request["op"] in {"new", "resume", "close", "stats", "lease", "listen", "load"}
    if request["op"] == "new":
        assert 0 < request["window"] <= agent.MAX_WINDOW and 0 <= request["heartbeat"] <= 3600
        assert isinstance(request["window"], float) and request["window"] == request["window"]  # finite, not NaN
    if request["op"] == "resume":
        assert isinstance(request["received"], int) and 0 <= request["received"] <= agent.MAX_POSITION
    if request["op"] == "lease":  # a name that stays a file of the leases directory
        name = request["name"]
        assert isinstance(name, str) and 1 <= len(name) <= 120 and not name.startswith(".") and "/" not in name and "\x00" not in name
        assert isinstance(request["ttl"], int) and not isinstance(request["ttl"], bool) and 0 < request["ttl"] <= agent.MAX_LEASE_TTL


class FakeTransport(asyncio.Transport):
    """What the relay writes to a channel, and whether it closed it."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False

    def write(self, data: Any) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


@FAST
@given(st.one_of(payloads.map(lambda p: HEADER.pack(b"H", len(p)) + p), st.binary(max_size=400)), st.lists(st.integers(min_value=0), max_size=6))
def test_relay_hello_handler_answers_or_closes_whatever_arrives(data: bytes, cuts: list[int]) -> None:
    async def run() -> tuple[Any, FakeTransport]:
        relay = agent.Relay(port=1)  # nothing listens on port 1: a new stream's dial fails fast
        relay.log = lambda message: None
        channel = agent.ChannelProtocol(relay)
        transport = FakeTransport()
        channel.connection_made(transport)
        for chunk in split(data, cuts):
            if transport.closed:
                break
            channel.data_received(chunk)
        pending = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        if pending:
            await asyncio.wait_for(asyncio.gather(*pending), 10)  # no hang
        channel.connection_lost(None)
        for stream in list(relay.table.streams.values()):
            stream.close("the test ended")
            stream.io.pump()
        return relay, transport

    relay, transport = asyncio.run(run())
    assert relay.pending_hellos == 0 and relay.channels == 0
    if transport.closed and transport.written:
        kind, length = HEADER.unpack_from(transport.written)
        assert kind == b"R"
        json.loads(bytes(transport.written[HEADER.size : HEADER.size + length]))  # every answer is JSON


@FAST
@given(st.sampled_from([b"R", b"D", b"E", b"\xff"]), payloads, st.integers(min_value=0, max_value=10), st.integers(min_value=0, max_value=10))
def test_parse_reply_returns_counts_in_range_or_stream_gone(kind: bytes, payload: bytes, acked: int, extra: int) -> None:
    most = acked + extra
    try:
        received, consumed, replaying = core.parse_reply(kind, payload, acked, most)
    except core.StreamGone as gone:
        assert str(gone)
        return
    assert acked <= received <= most and 0 <= consumed <= received and 0 <= replaying


class FakeChannel:
    def __init__(self) -> None:
        self.written = bytearray()
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.written += data

    def abort(self) -> None:
        self.aborted = True

    def close(self) -> None:
        self.aborted = True


class FakeLink:
    connection = None


@FAST
@given(st.one_of(payloads.map(lambda p: HEADER.pack(b"R", len(p)) + p), st.binary(max_size=400)), st.lists(st.integers(min_value=0), max_size=6))
def test_reply_handling_never_raises_into_the_ssh_connection(data: bytes, cuts: list[int]) -> None:
    async def run() -> asyncio.Future[None]:
        path = resumable.RelayPath(FakeLink(), "/relay", heartbeat=1.0)  # type: ignore[arg-type]
        stream = resumable.ResumableClient(path, set())
        reply = stream.reply = asyncio.get_running_loop().create_future()
        session = resumable._RelayChannel(stream)
        channel = FakeChannel()
        session.connection_made(channel)  # type: ignore[arg-type]
        stream.channel = channel  # type: ignore[assignment]
        stream.core.hello(1.0)  # as _hello does: the reply is what comes next
        for chunk in split(data, cuts):
            session.data_received(chunk, None)  # anything escaping here would end the SSH connection
            if channel.aborted:
                break
        if not reply.done():
            session.connection_lost(None)
        return reply

    reply = asyncio.run(run())
    assert reply.done()
    if reply.exception() is not None:
        assert isinstance(reply.exception(), resumable.StreamGone | ConnectionError)
