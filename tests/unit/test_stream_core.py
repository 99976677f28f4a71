"""The stream core (gt_remote/protocol/stream.py) proven against a model: a laptop core and a
relay core, wired in-process through channels that carry bytes one slice at a time and can
drop at any byte, in either direction, while applications write 1 byte to 1 MiB, stall,
close or vanish, channels back up, acks are delayed and coalesced, and time passes.

The model is simple: each application must receive exactly what the other wrote, in order,
once, with its end after the last byte; what each end holds never passes its cap; after a
resume both ends agree on their counts; an ended stream gives its memory back and ends its
application with a clean close (EOF after every byte that arrived), never a reset.
"""

from __future__ import annotations

import os
import random
from collections import deque
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from gt_remote.protocol import stream as core

CAP = 8 * 1024  # small, so the cap, the budget and replays are reached in a few steps
BUDGET = 6 * 1024
WINDOW = 1000.0
MOST_WRITE = 1024 * 1024
PATTERN = random.Random(26).randbytes(4 * MOST_WRITE)  # no period a shift could hide behind
small_sizes = st.one_of(st.integers(1, 64), st.integers(1, 4096))
sizes = st.one_of(small_sizes, st.integers(1, MOST_WRITE))
DROP_AFTER = 6  # steps a channel lives at least: long enough for traffic and back-pressure on it
ENDINGS_AFTER = 25  # steps before an application may end or vanish: most of a run carries data
slices = st.one_of(st.integers(1, 16), st.integers(1, 70_000), st.just(1 << 30))


def pattern(start: int, size: int, salt: int) -> bytes:
    """`size` bytes of a stream from position `start`: no two positions alike nearby."""
    out = bytearray()
    offset = (start + salt * 977) % len(PATTERN)
    while size:
        piece = PATTERN[offset : offset + size]
        out += piece
        size -= len(piece)
        offset = 0
    return bytes(out)


@dataclass
class App:
    """One end's application, as its socket would see the stream."""

    salt: int
    written: bytearray = field(default_factory=bytearray)
    got: bytearray = field(default_factory=bytearray)
    wrote_eof: bool = False
    got_eof: bool = False
    gone: bool = False
    reset: bool = False  # a stream must never end its application with one


@dataclass
class Channel:
    """One channel: the bytes in flight each way, and the relay's side of it."""

    up: bytearray = field(default_factory=bytearray)
    down: bytearray = field(default_factory=bytearray)
    relay_reader: core.FrameReader = field(default_factory=lambda: core.FrameReader(core.MAX_FRAME, core.MAX_HELLO))
    laptop_reader: core.FrameReader = field(default_factory=lambda: core.FrameReader(core.MAX_FRAME, core.MAX_REPLY))
    greeted: bool = False
    relay_stream: core.Stream | None = None
    alive: bool = True


class StreamPair(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.laptop_budget, self.relay_budget = core.Budget(BUDGET), core.Budget(BUDGET)
        self.laptop = core.Stream(core.LAPTOP, WINDOW, self.now, self.laptop_budget, CAP, stream_id="ab" * 16, owner="laptop-host")
        self.table = core.StreamTable(self.relay_budget)
        self.relay: core.Stream | None = None
        self.dialled = False
        self.dial_pending: Channel | None = None  # the channel whose `new` waits for the dial
        self.channel: Channel | None = None
        self.client, self.server = App(1), App(2)
        self.expired = False
        self.steps = 0
        self.connected_at = 0

    # --- moving bytes, as the adapters do ---------------------------------------------------

    def pump_laptop(self) -> None:
        laptop, channel = self.laptop, self.channel
        data = laptop.to_channel()
        while data:
            if channel is not None and channel.alive:
                channel.up += data
            data = laptop.to_channel()
        self.deliver(laptop, self.client)

    def pump_relay(self) -> None:
        relay = self.relay
        if relay is None:
            return
        data = relay.to_channel()
        while data:
            channel = relay.io
            if channel is not None and channel.alive:
                channel.down += data
            data = relay.to_channel()
        self.deliver(relay, self.server)
        if relay.finished:
            self.table.forget(relay)
        self.relay_budget.take_changed()
        self.laptop_budget.take_changed()

    def deliver(self, stream: core.Stream, app: App) -> None:
        data = stream.to_app()
        while data:  # as StreamPipe does: a large inbox comes a piece at a time
            assert not app.gone and not app.got_eof, "bytes for an application that is gone or had its end"
            app.got += data
            data = stream.to_app()
        if stream.eof_for_app:
            stream.gave_eof()
            app.got_eof = True

    def pump(self) -> None:
        self.steps += 1
        for _ in range(3):  # each end's output can make the other's
            self.pump_laptop()
            self.pump_relay()

    # --- the channel -------------------------------------------------------------------------

    @precondition(lambda self: (self.channel is None or not self.channel.alive) and not self.laptop.finished)
    @rule()
    def connect(self) -> None:
        self.channel = Channel()
        self.connected_at = self.steps
        self.laptop.hello(heartbeat=1.0)
        self.pump()

    @precondition(lambda self: self.channel is not None and self.channel.alive and self.channel.up)
    @rule(size=slices)
    def carry_up(self, size: int) -> None:
        channel = self.channel
        assert channel is not None
        data, channel.up = bytes(channel.up[:size]), channel.up[size:]
        frames = channel.relay_reader.feed(data)
        if not channel.greeted and frames:
            channel.greeted = True
            kind, payload = frames.pop(0)
            assert kind == b"H"
            self.greet(channel, core.parse_hello(payload))
        stream = channel.relay_stream
        if stream is not None and stream.io is channel and frames:
            stream.on_frames(frames, self.now, 0)
        self.pump()

    def greet(self, channel: Channel, request: dict[str, object]) -> None:
        stream, answer = self.table.greet(request, self.now)
        if answer:
            channel.down += answer
            return
        assert stream is not None
        if self.relay is not None and stream is not self.relay:
            raise AssertionError("a second stream for one id: a ghost")
        if stream.io is not None and stream.io is not channel:
            stream.io.alive = False  # the relay aborts the old channel
        stream.io = channel
        channel.relay_stream = stream
        if self.relay is None:
            self.relay = stream
            self.dial_pending = channel

    @precondition(lambda self: self.relay is not None and not self.dialled)
    @rule()
    def dial_completes(self) -> None:
        relay = self.relay
        assert relay is not None
        self.dialled = True
        relay.app_writable = True
        channel, self.dial_pending = self.dial_pending, None
        if channel is not None and relay.io is channel and channel.alive and not relay.attached:
            relay.attach(0, 0, self.now)
        self.pump()

    @precondition(lambda self: self.channel is not None and self.channel.alive and self.channel.down)
    @rule(size=slices)
    def carry_down(self, size: int) -> None:
        channel = self.channel
        assert channel is not None
        data, channel.down = bytes(channel.down[:size]), channel.down[size:]
        self.laptop.on_frames(channel.laptop_reader.feed(data), self.now, 0)
        self.pump()

    @precondition(lambda self: self.channel is not None and self.channel.alive and self.steps - self.connected_at >= DROP_AFTER)
    @rule()
    def drop(self) -> None:
        """The SSH connection dies: what is in flight either way is lost."""
        channel = self.channel
        assert channel is not None
        channel.alive = False
        self.laptop.detach()
        if self.relay is not None and self.relay.io is channel:
            self.relay.detach()
        self.pump()

    @rule(which=st.sampled_from(["laptop", "relay"]), writable=st.booleans())
    def channel_backpressure(self, which: str, writable: bool) -> None:
        stream = self.laptop if which == "laptop" else self.relay
        if stream is not None:
            stream.channel_writable = writable
        self.pump()

    # --- the applications ------------------------------------------------------------------

    @precondition(lambda self: self.laptop.reading and not self.client.wrote_eof and not self.client.gone and not self.laptop.finished)
    @rule(size=sizes)
    def client_writes(self, size: int) -> None:
        data = pattern(len(self.client.written), size, self.client.salt)
        self.client.written += data
        self.laptop.app_data(data)
        self.pump()

    @precondition(lambda self: self.laptop.reading and not self.client.wrote_eof and not self.client.gone and not self.laptop.finished)
    @rule(size=small_sizes)
    def client_types(self, size: int) -> None:
        """Keystrokes and small frames: the writes that must not be lost under back-pressure."""
        self.client_writes(size)

    @precondition(lambda self: self.relay is not None and self.dialled and self.relay.reading and not self.server.wrote_eof and not self.server.gone and not self.relay.finished)
    @rule(size=sizes)
    def server_writes(self, size: int) -> None:
        assert self.relay is not None
        data = pattern(len(self.server.written), size, self.server.salt)
        self.server.written += data
        self.relay.app_data(data)
        self.pump()

    @precondition(lambda self: self.relay is not None and self.dialled and self.relay.reading and not self.server.wrote_eof and not self.server.gone and not self.relay.finished)
    @rule(size=small_sizes)
    def server_pushes(self, size: int) -> None:
        """Pane updates: small frames from the server."""
        self.server_writes(size)

    @precondition(lambda self: not self.client.wrote_eof and not self.client.gone and self.steps > ENDINGS_AFTER)
    @rule()
    def client_ends(self) -> None:
        self.client.wrote_eof = True
        self.laptop.app_eof()
        self.pump()

    @precondition(lambda self: self.relay is not None and self.dialled and not self.server.wrote_eof and not self.server.gone and self.steps > ENDINGS_AFTER)
    @rule()
    def server_ends(self) -> None:
        assert self.relay is not None
        self.server.wrote_eof = True
        self.relay.app_eof()
        self.pump()

    @precondition(lambda self: not self.client.gone and len(self.client.written) > 0 and self.steps > ENDINGS_AFTER)
    @rule()
    def client_goes(self) -> None:
        self.client.gone = self.client.wrote_eof = True
        self.laptop.app_closed()
        self.pump()

    @precondition(lambda self: self.relay is not None and self.dialled and not self.server.gone and self.steps > ENDINGS_AFTER)
    @rule()
    def server_goes(self) -> None:
        assert self.relay is not None
        self.server.gone = self.server.wrote_eof = True
        self.relay.app_closed()
        self.pump()

    @rule(which=st.sampled_from(["laptop", "relay"]), writable=st.booleans())
    def app_backpressure(self, which: str, writable: bool) -> None:
        stream = self.laptop if which == "laptop" else self.relay
        if stream is None or (which == "relay" and not self.dialled):
            return
        if writable:
            stream.app_drained(0, self.now)
        else:
            stream.app_writable = False
        self.pump()

    # --- time --------------------------------------------------------------------------------

    @rule(seconds=st.floats(0, 0.2))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds
        self.laptop.tick(self.now, 0)
        if self.relay is not None:
            self.relay.tick(self.now, 0)
        self.pump()

    @precondition(lambda self: self.channel is not None and self.channel.alive and (self.channel.up or self.channel.down))
    @rule()
    def catch_up(self) -> None:
        """Everything in flight arrives, both ways, a few times over: streams can finish (and
        a drop can land just after) in the middle of a run, not only when it settles."""
        for _ in range(4):
            channel = self.channel
            if channel is None or not channel.alive:
                return
            if channel.up:
                self.carry_up(1 << 30)
            if channel.down:
                self.carry_down(1 << 30)
            if self.relay is not None and not self.dialled:
                self.dial_completes()
            self.time_passes(0.06)

    @rule()
    def heartbeat(self) -> None:
        self.laptop.heartbeat()
        self.pump()

    @precondition(lambda self: not self.expired and len(self.client.written) + len(self.server.written) > 0 and self.steps > 2 * ENDINGS_AFTER)
    @rule()
    def silence_past_the_window(self) -> None:
        """Nothing moves for longer than the window: both ends end the stream cleanly."""
        self.expired = True
        if self.channel is not None:
            self.channel.alive = False
        self.now += WINDOW + 1
        self.laptop.detach()
        self.laptop.tick(self.now, 0)
        if self.relay is not None:
            self.relay.detach()
            self.relay.tick(self.now, 0)
        self.pump()
        assert self.laptop.finished and (self.relay is None or self.relay.finished)
        assert self.client.got_eof or self.client.gone, "an expired stream ends its client with EOF"
        assert self.relay is None or self.server.got_eof or self.server.gone or not self.dialled

    # --- what must always hold ----------------------------------------------------------------

    @invariant()
    def each_side_gets_a_prefix_of_what_the_other_wrote(self) -> None:
        assert self.client.got == self.server.written[: len(self.client.got)], "the client got bytes lost, duplicated or reordered"
        assert self.server.got == self.client.written[: len(self.server.got)], "the server got bytes lost, duplicated or reordered"
        if self.client.got_eof and not self.expired and not self.laptop.finished:
            assert self.client.got == self.server.written and self.server.wrote_eof
        if self.server.got_eof and not self.expired and self.relay is not None and not self.relay.finished:
            assert self.server.got == self.client.written and self.client.wrote_eof

    @invariant()
    def what_each_end_holds_stays_under_its_cap(self) -> None:
        for stream in (self.laptop, self.relay):
            if stream is not None:
                assert len(stream.outbox) < CAP + MOST_WRITE and stream.sent - stream.peer_consumed < CAP + MOST_WRITE
                assert stream.inbox_size < CAP + MOST_WRITE
                assert len(stream.outbox) == stream.sent - stream.peer_consumed or stream.finished
                assert stream.peer_consumed <= stream.peer_received

    @invariant()
    def counts_never_run_ahead_of_the_other_end(self) -> None:
        laptop, relay = self.laptop, self.relay
        if relay is None:
            assert laptop.peer_received == 0
            return
        assert laptop.peer_received <= relay.in_positions and relay.peer_received <= laptop.in_positions
        assert laptop.in_positions <= relay.out_positions and relay.in_positions <= laptop.out_positions
        assert laptop.peer_consumed <= relay.consumed and relay.peer_consumed <= laptop.consumed

    @invariant()
    def an_ended_stream_holds_nothing(self) -> None:
        for stream, budget in ((self.laptop, self.laptop_budget), (self.relay, self.relay_budget)):
            if stream is not None and stream.finished:
                assert stream.held == 0 and budget.total == 0 and id(stream) not in budget.members
        assert not self.client.reset and not self.server.reset

    # --- at the end: heal everything and let it settle ------------------------------------------

    def teardown(self) -> None:
        self.settle()
        if self.laptop.finished and not self.expired:
            assert not self.table.streams, "the laptop let the stream go and the relay still holds it: a ghost"
        if self.expired:
            return
        laptop, relay = self.laptop, self.relay
        if relay is None or not self.dialled:
            return
        if not laptop.finished and not relay.finished:
            assert laptop.peer_received == relay.in_positions and relay.peer_received == laptop.in_positions, "counts disagree after settling"
        if not self.client.gone:
            assert self.client.got == self.server.written, "the client did not get every byte"
            assert self.client.got_eof == self.server.wrote_eof, "the client's end"
        if not self.server.gone:
            assert self.server.got == self.client.written, "the server did not get every byte"
            assert self.server.got_eof == self.client.wrote_eof, "the server's end"

    def close_abandoned(self) -> None:
        """What the laptop's adapter does for a close the relay never answered: the relay's
        close op for that id, once the link is up."""
        relay = self.table.streams.get(self.laptop.id)
        if relay is not None:
            relay.close("closed on request")
            self.pump_relay()

    def settle(self) -> None:
        for _ in range(20_000):
            if self.laptop.finished and (self.channel is None or not self.channel.alive or not self.channel.down):
                if self.laptop.unconfirmed:
                    self.close_abandoned()
            before = (len(self.client.got), len(self.server.got), self.laptop.peer_received, self.relay and self.relay.peer_received, self.laptop.finished)
            if self.laptop.finished and (self.relay is None or self.relay.finished):
                break
            if (self.channel is None or not self.channel.alive) and not self.laptop.finished:
                self.connect()
            self.laptop.channel_writable = True
            self.laptop.app_drained(0, self.now)
            if self.relay is not None:
                self.relay.channel_writable = True
                if self.dialled:
                    self.relay.app_drained(0, self.now)
            if self.relay is not None and not self.dialled:
                self.dial_completes()
            channel = self.channel
            if channel is None:
                break
            moved = bool(channel.up or channel.down) and channel.alive
            if channel.up:
                self.carry_up(1 << 30)
            if channel.down:
                self.carry_down(1 << 30)
            self.time_passes(0.1)
            after = (len(self.client.got), len(self.server.got), self.laptop.peer_received, self.relay and self.relay.peer_received, self.laptop.finished)
            if not moved and before == after and not (channel.up or channel.down):
                break
        else:
            raise AssertionError("the streams never settled")


# Enough to find the old outbox's hole every time (about 150 examples on average), in seconds.
PROOF = settings(max_examples=1500, stateful_step_count=80, deadline=None, suppress_health_check=list(HealthCheck))
# The proof itself runs PROOF's count in `make test` and `make test-core` (GT_REMOTE_FULL_PROOF=1,
# as CI runs them); the quick run (`make test-quick`) checks the same properties on fewer examples.
FULL_PROOF = os.environ.get("GT_REMOTE_FULL_PROOF", "") not in ("", "0")
StreamPair.TestCase.settings = PROOF if FULL_PROOF else settings(PROOF, max_examples=100)
test_stream_pair = StreamPair.TestCase


class BackStreamPair(StreamPair):
    """The same model for a back tunnel's stream (issue #29): the relay accepted a connection
    on the gaming PC and made the stream, whose application (the polecat's client) may write
    at once; the laptop attaches it after the announcement with a resume at 0, and its own
    application is the laptop's service. Every property above must hold the same way."""

    def __init__(self) -> None:
        super().__init__()
        self.laptop_budget, self.relay_budget = core.Budget(BUDGET), core.Budget(BUDGET)
        self.laptop = core.Stream(core.LAPTOP, WINDOW, self.now, self.laptop_budget, CAP, stream_id="ab" * 16, owner="laptop-host", peer_opened=True)
        self.table = core.StreamTable(self.relay_budget)
        self.relay = self.table.accept("ab" * 16, 3307, "laptop-host", WINDOW, 1.0, self.now)
        self.relay.cap = CAP
        self.dialled = True  # the relay's application is the accepted connection: there from the start


BackStreamPair.TestCase.settings = StreamPair.TestCase.settings
test_back_stream_pair = BackStreamPair.TestCase


class TodaysOutbox(core.Stream):
    """The stream as both ends kept it before the core (commit d7d3717): the outbox's
    `append` merged a small write into the last chunk whenever nothing was pending, and a
    second queue, `pending`, said what the channel had not had. Ported onto the core, so the
    model can show that it finds the hole that left (issue #26)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.pending: deque[bytes | memoryview] = deque()

    def app_data(self, data: bytes) -> None:
        if self.finished or self.sent_eof or self.app_gone:
            return
        hot = self.attached and self.channel_writable and not self.pending
        self.sent += len(data)
        self.outbox.end += len(data)
        chunks = self.outbox.chunks
        if chunks and len(chunks[-1]) + len(data) <= core.SMALL and (self.pending[-1] is chunks[-1] if self.pending else True):
            chunks[-1] = chunks[-1] + data
            if self.pending:
                self.pending[-1] = chunks[-1]
        else:
            chunks.append(data)
            self.pending.append(data)
        if hot:
            self.pending.clear()
            self.out.append(core.frame(b"D", data))
        self.budget.total += len(data)
        if self.budget.total > self.budget.limit:
            self.budget.stop_the_largest()
        self._update_reading()

    def _flush(self) -> None:
        while self.pending:
            self.out.append(core.frame(b"D", bytes(self.pending.popleft())))
        if self.sent_eof and self.flushed <= self.sent:
            self.out.append(core.EOF_FRAME)
            self.flushed = self.sent + 1

    def _start_sending(self, position: int) -> None:
        super()._start_sending(position)
        self.pending = deque(self.outbox.read(position, 1 << 62))
        self.flushed = position if position > self.sent else 0

    def hello(self, heartbeat: float) -> None:
        super().hello(heartbeat)
        if self.attached:  # a new stream: everything goes with the hello
            self.pending = deque(self.outbox.read(0, 1 << 62))


def test_the_model_finds_the_hole_the_old_outbox_left(monkeypatch: pytest.MonkeyPatch) -> None:
    """The property test's power, kept proven: run against the old outbox it must fail, and
    for the reason the issue reported (bytes lost), within its usual number of examples."""
    monkeypatch.setattr(core, "Stream", TodaysOutbox)
    with pytest.raises(AssertionError, match="lost, duplicated or reordered|did not get every byte"):
        # found, not shrunk; the quick run takes the same examples every time (derandomize), so its
        # time is known; the full proof draws new ones on every run
        hunt = settings(PROOF, database=None, report_multiple_bugs=False, phases=[Phase.generate], derandomize=not FULL_PROOF)
        run_state_machine_as_test(StreamPair, settings=hunt)


# --- each decision the two old copies differed on, written once (issue #26) -----------------


def pair_attached() -> tuple[core.Stream, core.Stream, core.StreamTable]:
    """A laptop core and a relay core whose stream is open and answered, nothing in flight."""
    laptop = core.Stream(core.LAPTOP, WINDOW, 0.0, stream_id="cd" * 16, owner="me")
    table = core.StreamTable(core.Budget())
    laptop.hello(heartbeat=1.0)
    [(kind, payload)] = core.FrameReader().feed(laptop.to_channel())
    relay, answer = table.greet(core.parse_hello(payload), 0.0)
    assert relay is not None and not answer
    relay.app_writable = True
    relay.attach(0, 0, 0.0)
    laptop.on_frames(core.FrameReader().feed(relay.to_channel()), 0.0, 0)
    assert laptop.attached and not laptop.awaiting_reply
    return laptop, relay, table


def carry(source: core.Stream, target: core.Stream, now: float = 0.0) -> list[tuple[bytes, bytes]]:
    frames = core.FrameReader().feed(source.to_channel())
    target.on_frames(frames, now, 0)
    return frames


def test_a_repeated_end_counts_once_at_either_end() -> None:
    laptop, relay, _ = pair_attached()
    for stream in (laptop, relay):
        stream.on_frames([(b"E", b""), (b"E", b"")], 0.0, 0)
        assert stream.in_positions == 1


def test_only_the_relay_answers_a_heartbeat() -> None:
    laptop, relay, _ = pair_attached()
    laptop.heartbeat()
    assert carry(laptop, relay) == [(b"K", b"")]
    assert carry(relay, laptop) == [(b"K", b"")]
    assert laptop.to_channel() == b"", "the laptop answered the relay's answer"


def test_an_ack_carries_what_arrived_and_what_the_application_took() -> None:
    laptop, relay, _ = pair_attached()
    laptop.app_data(b"x" * 100)
    carry(laptop, relay)
    assert relay.to_app() == b"x" * 100  # the server's socket took all 100, 40 of them still in its buffer
    relay.tick(1.0, app_buffered=40)
    assert carry(relay, laptop) == [(b"A", core.ACK.pack(100, 60))]
    assert laptop.peer_received == 100 and laptop.peer_consumed == 60 and len(laptop.outbox) == 40


def test_the_budget_stops_the_stream_with_the_largest_outbox_until_half_is_left() -> None:
    budget = core.Budget(1000)
    small, large = (core.Stream(core.RELAY, WINDOW, 0.0, budget) for _ in range(2))
    small.app_data(b"s" * 300)
    large.app_data(b"l" * 600)
    assert small.reading and large.reading
    small.app_data(b"s" * 200)  # 1100 in all: the largest outbox stops, whoever wrote last
    assert budget.take_changed() == [large] and not large.reading and small.reading
    large._acknowledged(600, 600)  # 500 left: half the budget
    assert large.reading and budget.total == 500


def test_a_hello_lost_with_its_connection_is_retried_as_a_resume_that_leaves_no_ghost() -> None:
    laptop = core.Stream(core.LAPTOP, WINDOW, 0.0, stream_id="ef" * 16, owner="me")
    table = core.StreamTable(core.Budget())
    laptop.hello(heartbeat=1.0)
    laptop.app_data(b"first bytes")
    first = core.FrameReader().feed(laptop.to_channel())
    relay, _ = table.greet(core.parse_hello(first[0][1]), 0.0)  # the relay got the hello and the bytes...
    assert relay is not None
    relay.on_frames(first[1:], 0.0, 0)
    laptop.detach()  # ...and the connection died before its reply
    laptop.hello(heartbeat=1.0)
    retry = core.parse_hello(core.FrameReader().feed(laptop.to_channel())[0][1])
    assert retry["op"] == "resume" and retry["create"] is True
    again, answer = table.greet(retry, 0.0)
    assert again is relay and not answer and len(table.streams) == 1, "the retry must find the stream, not open a second"
    assert relay.received == len(b"first bytes"), "its first bytes were kept once"


def test_a_retry_creates_only_what_the_relay_never_saw_and_never_revives_an_ended_stream() -> None:
    table = core.StreamTable(core.Budget())
    request = {"op": "resume", "id": "01" * 16, "received": 0, "consumed": 0, "owner": "me", "create": True, "window": 60.0, "heartbeat": 1.0}
    stream, _ = table.greet(dict(request), 0.0)
    assert stream is not None and table.total == 1
    stream.close("ended")
    table.forget(stream)
    again, answer = table.greet(dict(request), 0.0)
    assert again is None and b"unknown" in answer and table.total == 1
    later, answer = table.greet({**request, "id": "02" * 16, "received": 5}, 0.0)
    assert later is None and b"unknown" in answer, "a stream that had bytes cannot be created anew"


def test_a_stalled_reader_holds_its_writer_to_the_cap_across_resumes() -> None:
    laptop, relay, table = pair_attached()
    laptop.app_writable = False  # the client never reads
    for resume in range(8):
        while relay.reading:
            relay.app_data(b"p" * 4096)
            carry(relay, laptop)
        assert relay.sent - relay.peer_consumed < core.CAP + 4096, f"resume {resume}: the relay ran ahead of the client"
        assert laptop.held < core.CAP + 4096 and relay.held < core.CAP + 4096
        laptop.detach()
        relay.detach()
        laptop.hello(heartbeat=1.0)
        [(_, payload)] = core.FrameReader().feed(laptop.to_channel())
        table.greet(core.parse_hello(payload), 0.0)
        carry(relay, laptop)
    assert not relay.reading, "a reconnect gave the relay credit the client never gave"


def test_a_close_is_answered_and_an_unanswered_one_is_known_as_such() -> None:
    """Both ends done in one exchange (a Ping, then both sides close): the laptop's last ack
    and its C leave together. If they are lost, only the laptop knows the stream is over:
    `unconfirmed` tells its adapter to have the relay close it by id."""
    laptop, relay, _ = pair_attached()
    laptop.app_data(b"ping")
    laptop.app_eof()
    carry(laptop, relay)
    assert relay.to_app() == b"ping"
    relay.app_data(b"pong")
    relay.app_eof()
    relay.tick(1.0, 0)
    carry(relay, laptop)  # pong, the ack of the laptop's end, the relay's end
    assert laptop.finished and laptop.unconfirmed, "the laptop closed first and has no answer yet"
    assert not relay.finished
    frames = carry(laptop, relay)
    assert frames[-1] == (b"C", b"") and relay.finished
    assert carry(relay, laptop) == [(b"C", b"")], "the relay answers the close"
