"""The stdio transport's multiplexer: many channels over one exec channel's stdin and stdout,
for SSH servers that run commands but forward nothing (Dropbear has no stream-local
forwarding; OpenSSH under `DisableForwarding yes` refuses every forward).

The laptop runs the relay's bridge (`relay_agent.py --mux`) once per SSH connection, and opens
a virtual channel through it for each stream, to the relay's Unix socket, just as sshd's
stream-local forwarding would. One exec channel, not one per stream: a stream then opens
with one frame instead of a login shell and a python3 start, and the health Ping every
keepalive starts no process on the remote (docs/resume.md, "Transports", has the figures).

Sans-IO, written once for both ends (the laptop's gt_remote/tunnel/mux.py and the bridge in
gt_remote/remote/relay/relay_agent.py, built with this file inlined): bytes and calls in,
bytes and events out. Stdlib only, Python 3.8 syntax.

Wire, both ways: 1-byte kind, 4-byte channel id, 4-byte length (big-endian), payload.
  O open (laptop): JSON {"unix": PATH} or {"tcp": PORT}   R opened (bridge)   F failed: reason
  D data   E end of data (half-close)   C close (the channel is gone at both ends)
  W window: 4-byte count of bytes the sender may send more on this channel
Flow control is per channel and per direction, as SSH's own: each end may have WINDOW bytes
unacknowledged on a channel, and the receiver gives credit back as its application takes
the bytes. So one stalled channel never holds up the others on the shared pipe, and each end
buffers at most WINDOW per channel. Channel ids come from the laptop, never reused.
"""

from __future__ import annotations

import json
import struct
from collections import deque
from typing import Any, Deque, Dict, List, Tuple

from gt_remote.protocol.frames import FrameError

MUX_HEADER = struct.Struct(">cII")
MUX_WINDOW = 1024 * 1024  # per channel and direction
MUX_GRANT_AT = MUX_WINDOW // 4  # credit goes back in batches of at least this much (or when asked)
MUX_FRAME = 64 * 1024  # the most data one D frame carries
MUX_MAX_PAYLOAD = 64 * 1024  # any frame's payload (an open's JSON, a reason)
MUX_MAGIC = b"GT-REMOTE-MUX 1\n"  # the bridge's first line: what came before it was a login shell's noise
COUNT = struct.Struct(">I")

Event = Tuple[Any, ...]


def mux_frame(kind: bytes, channel: int, payload: bytes = b"") -> bytes:
    return MUX_HEADER.pack(kind, channel, len(payload)) + payload


class MuxChannel:
    """One virtual channel at one end: its credit to send, what waits for credit, and what
    its application took that the peer has not been credited for yet."""

    def __init__(self) -> None:
        self.credit = MUX_WINDOW  # bytes this end may still send
        self.window = MUX_WINDOW  # bytes the peer may still send (its credit, as this end counts it)
        self.pending: Deque[bytes] = deque()  # written, waiting for credit
        self.pending_size = 0
        self.taken = 0  # received and taken by the application, not yet credited back
        self.eof_pending = False  # E after the pending bytes
        self.open = True  # the application may still write (not closed at this end)
        self.closing = False  # closed at this end: C once the pending bytes (and E) are out


class MuxEnd:
    """One end of the multiplexer. Feed it the peer's bytes (`feed`, which returns events);
    call `open`/`opened`/`refuse`/`send`/`send_eof`/`close`/`took`; after each call, write
    `take_out()` to the pipe.

    Events: ("open", id, target) at the bridge; ("opened", id), ("failed", id, reason) at the
    laptop; ("data", id, bytes), ("eof", id), ("closed", id), ("writable", id) (pending bytes
    all went out: the application may write again) at both."""

    def __init__(self) -> None:
        self.channels: Dict[int, MuxChannel] = {}
        self.out: List[bytes] = []
        self.buffer = bytearray()
        self.next_id = 1

    # --- the laptop's calls -----------------------------------------------------------------

    def open(self, target: Dict[str, Any]) -> int:
        """A new channel to `target` ({"unix": path} or {"tcp": port}): its id."""
        channel = self.next_id
        self.next_id += 1
        self.channels[channel] = MuxChannel()
        self.out.append(mux_frame(b"O", channel, json.dumps(target).encode()))
        return channel

    # --- the bridge's answers -----------------------------------------------------------------

    def opened(self, channel: int) -> None:
        if channel in self.channels:
            self.out.append(mux_frame(b"R", channel))

    def refuse(self, channel: int, reason: str) -> None:
        if self.channels.pop(channel, None) is not None:
            self.out.append(mux_frame(b"F", channel, reason.encode("utf-8", "replace")[:MUX_MAX_PAYLOAD]))

    # --- both ends ------------------------------------------------------------------------------

    def send(self, channel: int, data: bytes) -> bool:
        """Data for the peer: what the credit allows now, the rest when it comes. False when
        some waits (the application should stop writing until ("writable", id))."""
        state = self.channels.get(channel)
        if state is None or not state.open or not data:
            return True
        if state.pending or state.eof_pending:
            state.pending.append(data)
            state.pending_size += len(data)
            return False
        sent = self._send_now(channel, state, memoryview(data))
        if sent < len(data):
            rest = bytes(data[sent:])
            state.pending.append(rest)
            state.pending_size += len(rest)
            return False
        return True

    def send_eof(self, channel: int) -> None:
        state = self.channels.get(channel)
        if state is None or not state.open:
            return
        if state.pending:
            state.eof_pending = True
        else:
            self.out.append(mux_frame(b"E", channel))

    def close(self, channel: int) -> None:
        """This end lets the channel go, after what it wrote and waits for credit (and its E),
        as an SSH channel's close does; the peer forgets it then. What arrives meanwhile is
        dropped: no application is left to take it."""
        state = self.channels.get(channel)
        if state is None:
            return
        state.open = False
        if state.pending or state.eof_pending:
            state.closing = True
            return
        del self.channels[channel]
        self.out.append(mux_frame(b"C", channel))

    def abort(self, channel: int) -> None:
        """This end lets the channel go now: what waits for credit is dropped."""
        if self.channels.pop(channel, None) is not None:
            self.out.append(mux_frame(b"C", channel))

    def took(self, channel: int, size: int, now: bool = False) -> None:
        """The application took `size` bytes of this channel's data: credit the peer, in
        batches (or at once with `now`, for an application that had stopped reading)."""
        state = self.channels.get(channel)
        if state is None or not state.open:
            return
        state.taken += size
        if state.taken >= MUX_GRANT_AT or (now and state.taken):
            state.window += state.taken
            self.out.append(mux_frame(b"W", channel, COUNT.pack(state.taken)))
            state.taken = 0

    def take_out(self) -> bytes:
        out, self.out = self.out, []
        return b"".join(out)

    def pending_size(self, channel: int) -> int:
        state = self.channels.get(channel)
        return state.pending_size if state is not None else 0

    # --- from the peer ---------------------------------------------------------------------

    def feed(self, data: bytes) -> List[Event]:
        """The peer's bytes: the events they carry. FrameError when they break the protocol
        (a frame too large, data beyond the credit given): the pipe is then broken."""
        self.buffer += data
        events: List[Event] = []
        start, size = 0, len(self.buffer)
        view = memoryview(self.buffer)
        try:
            while size - start >= MUX_HEADER.size:
                kind, channel, length = MUX_HEADER.unpack_from(view, start)
                if length > (MUX_FRAME if kind == b"D" else MUX_MAX_PAYLOAD):
                    raise FrameError("a multiplexer frame of %d bytes" % length)
                end = start + MUX_HEADER.size + length
                if end > size:
                    break
                payload = view[start + MUX_HEADER.size : end].tobytes()
                start = end
                self._on_frame(kind, channel, payload, events)
        finally:
            view.release()
            del self.buffer[:start]
        return events

    def _on_frame(self, kind: bytes, channel: int, payload: bytes, events: List[Event]) -> None:
        state = self.channels.get(channel)
        if kind == b"O":
            if state is not None or channel < self.next_id:
                raise FrameError("an open of channel %d, which was open already" % channel)
            try:
                target = json.loads(payload)
            except ValueError:
                raise FrameError("an open whose target is not JSON") from None
            self.next_id = channel + 1
            self.channels[channel] = MuxChannel()
            events.append(("open", channel, target))
            return
        if state is None:
            return  # a channel one end closed while this frame was on its way
        if state.closing and kind in (b"D", b"E"):
            return  # closed here: its application is gone (no credit goes back for it either)
        if kind == b"D":
            if len(payload) > state.window:
                raise FrameError("%d bytes on channel %d, beyond its credit of %d" % (len(payload), channel, state.window))
            state.window -= len(payload)
            events.append(("data", channel, payload))
        elif kind == b"W":
            if len(payload) != COUNT.size:
                raise FrameError("a window frame of %d bytes" % len(payload))
            state.credit += COUNT.unpack(payload)[0]
            self._flush(channel, state, events)
        elif kind == b"R":
            events.append(("opened", channel))
        elif kind == b"F":
            del self.channels[channel]
            events.append(("failed", channel, payload.decode("utf-8", "replace")))
        elif kind == b"E":
            events.append(("eof", channel))
        elif kind == b"C":
            del self.channels[channel]
            events.append(("closed", channel))
        else:
            raise FrameError("a multiplexer frame of kind %r" % (kind,))

    def _flush(self, channel: int, state: MuxChannel, events: List[Event]) -> None:
        if not state.pending:
            return
        while state.pending and state.credit:
            piece = state.pending.popleft()
            sent = self._send_now(channel, state, memoryview(piece))
            state.pending_size -= sent
            if sent < len(piece):
                state.pending.appendleft(piece[sent:])
                return
        if not state.pending:
            if state.eof_pending:
                state.eof_pending = False
                self.out.append(mux_frame(b"E", channel))
            if state.closing:
                del self.channels[channel]
                self.out.append(mux_frame(b"C", channel))
                return
            events.append(("writable", channel))

    def _send_now(self, channel: int, state: MuxChannel, data: memoryview) -> int:
        sent = 0
        while sent < len(data) and state.credit:
            size = min(len(data) - sent, state.credit, MUX_FRAME)
            self.out.append(MUX_HEADER.pack(b"D", channel, size) + data[sent : sent + size].tobytes())
            state.credit -= size
            sent += size
        return sent


def parse_target(target: Any) -> Tuple[str, Any]:
    """An open's target, checked: ("unix", path) or ("tcp", port); ValueError otherwise."""
    if isinstance(target, dict) and isinstance(target.get("unix"), str) and 0 < len(target["unix"]) < 108 and "\0" not in target["unix"]:
        return "unix", target["unix"]
    port = target.get("tcp") if isinstance(target, dict) else None
    if isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536:
        return "tcp", port
    raise ValueError("an open's target must be {\"unix\": PATH} or {\"tcp\": PORT}")
