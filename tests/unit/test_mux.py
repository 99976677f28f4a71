"""The stdio transport's multiplexer (gt_remote/protocol/mux.py) proven against a model: a
laptop end and a bridge end, wired through two pipes that carry bytes one slice at a time,
while channels open, carry data both ways, stall (their application stops taking bytes),
end their data (EOF) and close, in any order.

The model: each channel's receiver gets exactly what its sender wrote, in order, once, with
its end after the last byte; a channel never holds more than its window unacknowledged, so a
stalled channel never holds up another; what a closed channel had in flight is dropped, and
nothing of it reaches another channel."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from gt_remote.protocol import mux
from gt_remote.protocol.frames import FrameError

PATTERN = random.Random(31).randbytes(1 << 21)
WINDOW, GRANT_AT = 8192, 2048  # small, so credit runs out and pending bytes wait, in a few steps
REAL_WINDOW, REAL_GRANT_AT = mux.MUX_WINDOW, mux.MUX_GRANT_AT


@dataclass
class Side:
    """One application's view of one channel at one end."""

    written: bytearray = field(default_factory=bytearray)
    got: bytearray = field(default_factory=bytearray)
    untaken: int = 0  # delivered, not yet taken (a stalled application)
    stalled: bool = False
    wrote_eof: bool = False
    got_eof: bool = False
    paused: bool = False  # the end said the rest waits for credit
    closed: bool = False  # this end let the channel go, or heard that the other did
    flushed_close: bool = False  # this end closed it with close(): what it wrote still goes out


@dataclass
class Channel:
    laptop: Side = field(default_factory=Side)
    bridge: Side = field(default_factory=Side)
    opened: bool = False

    @property
    def closed(self) -> bool:
        return self.laptop.closed or self.bridge.closed


class MuxPair(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        mux.MUX_WINDOW, mux.MUX_GRANT_AT = WINDOW, GRANT_AT  # restored in teardown
        self.laptop, self.bridge = mux.MuxEnd(), mux.MuxEnd()
        self.up, self.down = bytearray(), bytearray()  # laptop -> bridge, bridge -> laptop
        self.channels: dict[int, Channel] = {}

    # --- the pipes ---------------------------------------------------------------------------

    def flush(self) -> None:
        self.up += self.laptop.take_out()
        self.down += self.bridge.take_out()

    @precondition(lambda self: self.up)
    @rule(size=st.one_of(st.integers(1, 40), st.integers(1, 200_000)))
    def carry_up(self, size: int) -> None:
        data, self.up[:] = bytes(self.up[:size]), self.up[size:]
        for event in self.bridge.feed(data):
            self.at_bridge(event)
        self.flush()

    @precondition(lambda self: self.down)
    @rule(size=st.one_of(st.integers(1, 40), st.integers(1, 200_000)))
    def carry_down(self, size: int) -> None:
        data, self.down[:] = bytes(self.down[:size]), self.down[size:]
        for event in self.laptop.feed(data):
            self.at_laptop(event)
        self.flush()

    def at_bridge(self, event: tuple[object, ...]) -> None:
        kind, channel_id = event[0], int(str(event[1]))
        if kind == "open":
            assert mux.parse_target(event[2]) == ("unix", "/relay.sock")
            self.bridge.opened(channel_id)
            return
        self.receive(self.bridge, self.channels[channel_id].bridge, channel_id, event)

    def at_laptop(self, event: tuple[object, ...]) -> None:
        kind, channel_id = event[0], int(str(event[1]))
        if kind == "opened":
            self.channels[channel_id].opened = True
            return
        self.receive(self.laptop, self.channels[channel_id].laptop, channel_id, event)

    def receive(self, end: mux.MuxEnd, side: Side, channel_id: int, event: tuple[object, ...]) -> None:
        kind = event[0]
        assert not side.closed or kind == "closed", "a frame reached a channel this end had let go"  # the peer's C may cross ours
        if kind == "data":
            assert not side.got_eof, "data after the end of data"
            payload = event[2]
            assert isinstance(payload, bytes)
            side.got += payload
            if side.stalled:
                side.untaken += len(payload)
            else:
                end.took(channel_id, len(payload))
        elif kind == "eof":
            side.got_eof = True
        elif kind == "closed":
            if not side.closed:
                side.closed = True
                sender = self.channels[channel_id].laptop if side is self.channels[channel_id].bridge else self.channels[channel_id].bridge
                if sender.flushed_close:  # closed with close(): every byte it wrote came first, and its end
                    assert side.got == sender.written, "a close lost bytes that were written before it"
                    assert side.got_eof == sender.wrote_eof
        elif kind == "writable":
            side.paused = False

    # --- the applications --------------------------------------------------------------------

    @precondition(lambda self: sum(not channel.closed for channel in self.channels.values()) < 6)
    @rule()
    def open_channel(self) -> None:
        channel_id = self.laptop.open({"unix": "/relay.sock"})
        self.channels[channel_id] = Channel()
        self.flush()

    def live(self) -> list[int]:
        return [cid for cid, channel in self.channels.items() if channel.opened and not channel.closed]

    @precondition(lambda self: self.live())
    @rule(data=st.data(), size=st.one_of(st.integers(1, 300), st.integers(1, 20_000)), at_laptop=st.booleans(), heeds_pause=st.booleans())
    def write(self, data: st.DataObject, size: int, at_laptop: bool, heeds_pause: bool) -> None:
        """An application told to wait (pause_writing) may still write what it had read already."""
        channel_id = data.draw(st.sampled_from(self.live()))
        side = self.channels[channel_id].laptop if at_laptop else self.channels[channel_id].bridge
        if side.wrote_eof or (side.paused and heeds_pause):
            return
        start = (len(side.written) + 7919 * channel_id) % (len(PATTERN) - size)
        payload = bytes(memoryview(PATTERN)[start : start + size])
        side.written += payload
        end = self.laptop if at_laptop else self.bridge
        if not end.send(channel_id, payload):
            side.paused = True
        self.flush()

    @precondition(lambda self: self.live())
    @rule(data=st.data(), sizes=st.lists(st.integers(1, 20_000), min_size=2, max_size=4), at_laptop=st.booleans())
    def write_a_burst(self, data: st.DataObject, sizes: list[int], at_laptop: bool) -> None:
        """Writes in a row, the later ones after the end said to wait: a socket's reads that
        were already under way (what a forwarded client's socket does)."""
        for size in sizes:
            self.write(data, size, at_laptop, heeds_pause=False)

    @precondition(lambda self: self.live())
    @rule(data=st.data(), at_laptop=st.booleans(), stalled=st.booleans())
    def stall_or_take(self, data: st.DataObject, at_laptop: bool, stalled: bool) -> None:
        channel_id = data.draw(st.sampled_from(self.live()))
        side = self.channels[channel_id].laptop if at_laptop else self.channels[channel_id].bridge
        side.stalled = stalled
        if not stalled and side.untaken:
            (self.laptop if at_laptop else self.bridge).took(channel_id, side.untaken, now=True)
            side.untaken = 0
        self.flush()

    @precondition(lambda self: self.live())
    @rule(data=st.data(), at_laptop=st.booleans())
    def end_of_data(self, data: st.DataObject, at_laptop: bool) -> None:
        channel_id = data.draw(st.sampled_from(self.live()))
        side = self.channels[channel_id].laptop if at_laptop else self.channels[channel_id].bridge
        if not side.wrote_eof:
            side.wrote_eof = True
            (self.laptop if at_laptop else self.bridge).send_eof(channel_id)
        self.flush()

    @precondition(lambda self: self.live())
    @rule(data=st.data(), at_laptop=st.booleans())
    def close(self, data: st.DataObject, at_laptop: bool) -> None:
        """As an SSH channel's close: what was written still goes out, then the close."""
        channel_id = data.draw(st.sampled_from(self.live()))
        side = self.channels[channel_id].laptop if at_laptop else self.channels[channel_id].bridge
        side.closed = side.flushed_close = True
        (self.laptop if at_laptop else self.bridge).close(channel_id)
        self.flush()

    @precondition(lambda self: self.live())
    @rule(data=st.data(), at_laptop=st.booleans())
    def abort(self, data: st.DataObject, at_laptop: bool) -> None:
        """Gone at once: what waits for credit is dropped (the peer gets a prefix)."""
        channel_id = data.draw(st.sampled_from(self.live()))
        side = self.channels[channel_id].laptop if at_laptop else self.channels[channel_id].bridge
        side.closed = True
        (self.laptop if at_laptop else self.bridge).abort(channel_id)
        self.flush()

    # --- what must always hold -------------------------------------------------------------

    @invariant()
    def each_receiver_gets_a_prefix_of_what_its_sender_wrote(self) -> None:
        for channel in self.channels.values():
            for sender, receiver in ((channel.laptop, channel.bridge), (channel.bridge, channel.laptop)):
                assert receiver.got == sender.written[: len(receiver.got)], "bytes lost, duplicated, reordered or crossed between channels"
                if receiver.got_eof:
                    assert receiver.got == sender.written and sender.wrote_eof

    @invariant()
    def a_stalled_channel_holds_at_most_its_window(self) -> None:
        for channel in self.channels.values():
            for side in (channel.laptop, channel.bridge):
                assert side.untaken <= mux.MUX_WINDOW

    def teardown(self) -> None:
        try:
            self.settle()
        finally:
            mux.MUX_WINDOW, mux.MUX_GRANT_AT = REAL_WINDOW, REAL_GRANT_AT

    def settle(self) -> None:
        """Every application takes what it has; everything in flight arrives."""
        for _ in range(1000):
            for channel_id, channel in self.channels.items():
                for end, side in ((self.laptop, channel.laptop), (self.bridge, channel.bridge)):
                    side.stalled = False
                    if side.untaken:
                        end.took(channel_id, side.untaken, now=True)
                        side.untaken = 0
            self.flush()
            if not self.up and not self.down:
                break
            if self.up:
                self.carry_up(1 << 30)
            if self.down:
                self.carry_down(1 << 30)
        for channel_id, channel in self.channels.items():
            if channel.closed or not channel.opened:
                continue
            for sender, receiver, end in ((channel.laptop, channel.bridge, self.laptop), (channel.bridge, channel.laptop, self.bridge)):
                assert end.pending_size(channel_id) == 0, "bytes still wait for credit after every application took all"
                assert receiver.got == sender.written, "a receiver did not get every byte"
                assert receiver.got_eof == sender.wrote_eof


FULL_PROOF = os.environ.get("GT_REMOTE_FULL_PROOF", "") not in ("", "0")
MuxPair.TestCase.settings = settings(max_examples=600 if FULL_PROOF else 80, stateful_step_count=60, deadline=None, suppress_health_check=list(HealthCheck))
test_mux_pair = MuxPair.TestCase


def test_data_beyond_the_credit_given_breaks_the_pipe() -> None:
    bridge = mux.MuxEnd()
    bridge.feed(mux.mux_frame(b"O", 1, b'{"unix": "/s"}'))
    flood = b"".join(mux.mux_frame(b"D", 1, b"x" * mux.MUX_FRAME) for _ in range(mux.MUX_WINDOW // mux.MUX_FRAME + 1))
    with pytest.raises(FrameError, match="beyond its credit"):
        bridge.feed(flood)


def test_a_frame_too_large_breaks_the_pipe() -> None:
    with pytest.raises(FrameError, match="a multiplexer frame of"):
        mux.MuxEnd().feed(mux.MUX_HEADER.pack(b"D", 1, mux.MUX_FRAME + 1))


def test_an_open_target_is_a_unix_path_or_a_port() -> None:
    assert mux.parse_target({"tcp": 9999}) == ("tcp", 9999)
    for bad in ({"tcp": True}, {"tcp": 70000}, {"unix": ""}, {"unix": "a\0b"}, ["/x"], {"file": "/x"}):
        with pytest.raises(ValueError):
            mux.parse_target(bad)
