"""The resumable stream protocol, written once for both ends: the laptop's supervisor
(gt_remote/tunnel/resumable.py) and the relay on the remote (gt_remote/remote/relay/relay_agent.py).

Sans-IO, as h11 and wsproto are: frames and calls in, bytes and state out; no sockets, no
event loop, no clock of its own (every call that needs the time is given `now`). Each end
is a thin adapter that moves bytes between a `Stream` here and its transports. The relay is
uploaded as one stdlib-only file built from this module and its own code
(gt_remote/remote/relay/build.py), so this file keeps to Python 3.8 and imports only the stdlib.

Wire format on a channel, both ways: 1-byte type, 4-byte big-endian length, payload.
  H hello (JSON, at most MAX_HELLO bytes), the first frame from the laptop:
      {"op": "new", "id", "window", "heartbeat", "owner"}
      | {"op": "resume", "id", "received", "consumed", "owner"[, "create": true, "window", "heartbeat"]}
      | {"op": "close", "ids": [...]} | {"op": "close", "owner"} | {"op": "stats"[, "owner"]}
      | {"op": "lease", "name", "ttl"}
  R reply (JSON), the first frame from the relay: {"received", "consumed", "replaying"}
      | {"closed": N} | {"holders": [...], "streams": N} | {"error": TEXT}
  D data   E end of data (counts as one position)   C close: this end's application is gone
  A ack (two 8-byte counts: positions received, bytes the application has taken)
  K heartbeat: the laptop sends one each keepalive, the relay answers each with one

Positions: each end counts the bytes its application wrote (`sent`) and one more for their
end (E). After a resume it replays from the peer's `received`. It keeps every byte until
the peer's *application* has taken it (`consumed`), and flow control counts the same: a
reader that stalls holds its writer to CAP bytes, however many resumes happen meanwhile,
and whatever waits in the peer for a stalled application is also in this end's outbox, so
this end's budget bounds both.

Decisions both ends share, each written here once:
- a repeated E counts once; data after E, or an unknown frame, is a broken channel;
- only the relay answers K; the laptop never answers an answer;
- acks carry positions received and bytes consumed, and are sent at once every ACK_EVERY
  positions, else ACK_DELAY after data, and again while the application still has some;
- past the budget, the stream whose outbox is largest stops reading, until the total falls
  to half;
- a C is answered with a C: the end that closed first knows the other let go, or else
  (its channel died first) that it must tell it again;
- a stream ends with its application getting every byte that arrived, then its end (EOF):
  never a reset; the adapters close the application's socket after a linger;
- a hello retried after a drop resumes whatever the relay holds, and creates the stream
  only when the relay never saw its id (so a client's first bytes reach the server once).
"""

from __future__ import annotations

import json
import math
import string
import struct
from collections import OrderedDict, deque
from typing import Any, Deque, Dict, List, Optional, Tuple, Union

HEADER = struct.Struct(">cI")
ACK = struct.Struct(">QQ")  # positions received, bytes consumed
CAP = 4 * 1024 * 1024  # bytes per stream and direction the peer's application has not taken
BUDGET = 64 * 1024 * 1024  # outbox bytes across all streams of one end
ACK_EVERY = 512 * 1024
ACK_DELAY = 0.05
FRAME_DATA = 256 * 1024  # the most data one D frame carries
BATCH = 256 * 1024  # the most data one call of `to_channel` hands out
HIGH_WATER = 128 * 1024  # a transport's write buffer beyond this: stop writing to it (adapters)
SMALL = 16 * 1024  # small writes are merged in the outbox, so a trickle is not a pile of objects
COALESCE = 64 * 1024  # up to this, what is due goes as one write (a message and its ack in one SSH
# packet); past it, one write per piece, never copied again to be joined
LINGER = 5.0  # an ended application's socket is read (and dropped) this long, so it gets FIN, not RST
MAX_FRAME = 1024 * 1024
MAX_HELLO = 16 * 1024
MAX_REPLY = 64 * 1024
MAX_WINDOW = 24 * 3600.0
MAX_HEARTBEAT = 3600.0
MAX_STREAMS = 1024
MAX_POSITION = 1 << 62
MAX_LEASE_TTL = 24 * 3600
ENDED_KEPT = 4096  # ids of ended streams the relay remembers, so a late retry cannot revive one
LEASE_NAME_CHARS = frozenset(string.ascii_letters + string.digits + "._-")
TRIM_AFTER = 1024 * 1024  # a stream that moved this much gives its memory back when it ends

LAPTOP = "laptop"  # the end that says hello and sends heartbeats
RELAY = "relay"  # the end that answers them

HEARTBEAT_FRAME = HEADER.pack(b"K", 0)
CLOSE_FRAME = HEADER.pack(b"C", 0)
EOF_FRAME = HEADER.pack(b"E", 0)


class FrameError(ValueError):
    """The bytes on a channel are not frames of this protocol: that channel is broken."""


class HelloError(ValueError):
    """A hello the relay will not serve: answered with the reason, then closed."""


class StreamGone(Exception):
    """The far end no longer has the stream, or refused it: it ends cleanly."""


def frame(kind: bytes, payload: bytes = b"") -> bytes:
    return HEADER.pack(kind, len(payload)) + payload


class FrameReader:
    """Splits a byte stream into (type, payload) frames, bounded by `limit` (and the first
    frame, the hello or its reply, by `first_limit`)."""

    def __init__(self, limit: int = MAX_FRAME, first_limit: Optional[int] = None) -> None:
        self.buffer = bytearray()
        self.limit = limit
        self.first_limit = first_limit

    def feed(self, data: bytes) -> List[Tuple[bytes, bytes]]:
        buffered = bool(self.buffer)
        if buffered:
            self.buffer += data
            view = memoryview(self.buffer)
        else:
            view = memoryview(data)  # the common case: frames straight from `data`, no buffering
        frames = []
        start, size = 0, len(view)
        try:
            while size - start >= HEADER.size:
                kind, length = HEADER.unpack_from(view, start)
                limit = self.limit if self.first_limit is None else self.first_limit
                if length > limit:
                    raise FrameError("a frame of %d bytes (at most %d)" % (length, limit))
                end = start + HEADER.size + length
                if end > size:
                    break
                frames.append((kind, view[start + HEADER.size : end].tobytes()))
                self.first_limit = None
                start = end
        finally:
            view.release()
        if buffered:
            del self.buffer[:start]
        elif start < size:
            self.buffer += data[start:]
        return frames


# --- hellos and replies ---------------------------------------------------------------------


def _seconds(value: Any, name: str, most: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise HelloError("%s must be a number of seconds" % name)
    if isinstance(value, int) and not 0 < value <= most:  # no float(): a 400-digit int overflows
        raise HelloError("%s must be more than 0 and at most %g s" % (name, most))
    seconds = float(value)
    if not (math.isfinite(seconds) and 0 < seconds <= most):
        raise HelloError("%s must be more than 0 and at most %g s" % (name, most))
    return seconds


def _stream_id(value: Any) -> str:
    if not isinstance(value, str) or not 32 <= len(value) <= 64 or not all(c in string.hexdigits for c in value):
        raise HelloError("bad stream id")
    return value


def _count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_POSITION:
        raise HelloError("%s must be a byte count" % name)
    return value


def _lease_name(value: Any) -> str:
    """A file name in the leases directory: no path, no dot file and no *.tmp (temporaries)."""
    if not isinstance(value, str) or not 1 <= len(value) <= 120 or value.startswith(".") or value.endswith(".tmp") or not set(value) <= LEASE_NAME_CHARS:
        raise HelloError("bad lease name")  # a .tmp name would be skipped by every lister
    return value


def _owner(value: Any) -> str:
    """Whose streams these are (the supervisor's lease name): `down` closes them by it."""
    return "" if value is None else _lease_name(value)


def _lease_ttl(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_LEASE_TTL:
        raise HelloError("ttl must be a whole number of seconds, more than 0 and at most %d" % MAX_LEASE_TTL)
    return value


def _timing(request: Dict[str, Any]) -> Dict[str, float]:
    heartbeat = request.get("heartbeat")
    return {
        "window": _seconds(request.get("window", 900), "window", MAX_WINDOW),
        "heartbeat": 0.0 if heartbeat is None else _seconds(heartbeat, "heartbeat", MAX_HEARTBEAT),
    }


def parse_hello(payload: bytes) -> Dict[str, Any]:
    """A hello's fields, checked; HelloError names what is wrong."""
    try:
        request = json.loads(payload.decode("utf-8"))
    except (ValueError, RecursionError):  # RecursionError: JSON nested too deeply
        raise HelloError("malformed hello: not JSON") from None
    if not isinstance(request, dict):
        raise HelloError("malformed hello: not a JSON object")
    op = request.get("op")
    if op == "stats":
        return {"op": "stats", "owner": _owner(request.get("owner"))}
    if op == "new":
        parsed: Dict[str, Any] = {"op": "new", "id": _stream_id(request.get("id")), "owner": _owner(request.get("owner"))}
        parsed.update(_timing(request))
        return parsed
    if op == "resume":
        received, consumed = _count(request.get("received"), "received"), _count(request.get("consumed", 0), "consumed")
        resumed: Dict[str, Any] = {"op": "resume", "id": _stream_id(request.get("id")), "received": received, "consumed": min(consumed, received), "owner": _owner(request.get("owner"))}
        if request.get("create") is True:
            resumed["create"] = True
            resumed.update(_timing(request))
        return resumed
    if op == "close":
        if "owner" in request:
            return {"op": "close", "owner": _lease_name(request.get("owner")), "ids": []}
        ids = request.get("ids")
        if not isinstance(ids, list) or len(ids) > MAX_STREAMS:
            raise HelloError("ids must be a list of at most %d stream ids" % MAX_STREAMS)
        return {"op": "close", "owner": "", "ids": [_stream_id(one) for one in ids]}
    if op == "lease":
        return {"op": "lease", "name": _lease_name(request.get("name")), "ttl": _lease_ttl(request.get("ttl"))}
    raise HelloError("unknown op")


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_reply(kind: bytes, payload: bytes, acked: int, most: int) -> Tuple[int, int, int]:
    """The relay's answer to a stream's hello: (positions it received, bytes its server
    took, bytes it replays), or StreamGone. `acked..most` is what it may claim to have."""
    if kind != b"R":
        raise StreamGone("the relay answered with a %r frame, not a reply" % (kind,))
    try:
        answer = json.loads(payload)
    except (ValueError, RecursionError):
        raise StreamGone("the relay's reply is not JSON") from None
    if not isinstance(answer, dict):
        raise StreamGone("the relay's reply is not a JSON object")
    if "error" in answer:
        raise StreamGone(str(answer["error"])[:200])
    counts = answer.get("received"), answer.get("consumed", 0), answer.get("replaying", 0)
    if not all(_is_count(count) for count in counts):
        raise StreamGone("the relay's reply has no byte counts")
    received, consumed, replaying = (int(str(count)) for count in counts)  # ints: checked above
    if not acked <= received <= most:
        raise StreamGone("the relay claims %d positions received, we sent %d" % (received, most))
    return received, max(0, min(consumed, received)), max(0, min(replaying, CAP + MAX_FRAME))


# --- what one end keeps -----------------------------------------------------------------------

Chunk = Union[bytes, memoryview]


class Outbox:
    """The bytes the peer's application has not taken, from stream position `start` to `end`, kept as
    the chunks they came in: appending and dropping never copy what is kept. Reading from a
    position is how both a plain flush and a replay find their bytes: there is no second
    queue of "not yet sent" chunks to keep in step with this one."""

    def __init__(self) -> None:
        self.chunks: Deque[bytes] = deque()
        self.head = 0  # bytes of chunks[0] before `start`
        self.start = 0
        self.end = 0

    def __len__(self) -> int:
        return self.end - self.start

    def append(self, data: bytes) -> None:
        chunks = self.chunks
        if chunks and len(chunks[-1]) + len(data) <= SMALL:
            chunks[-1] = chunks[-1] + data
        else:
            chunks.append(data)
        self.end += len(data)

    def drop_to(self, position: int) -> int:
        """The peer has everything before `position`: let it go; how many bytes were dropped."""
        position = min(position, self.end)
        if position <= self.start:
            return 0
        dropped, count = position - self.start, position - self.start + self.head
        chunks = self.chunks
        while chunks and count >= len(chunks[0]):
            count -= len(chunks.popleft())
        self.head = count if chunks else 0
        self.start = position
        return dropped

    def read(self, position: int, most: int) -> List[Chunk]:
        """Up to `most` bytes from `position` on, as views of the kept chunks."""
        skip = position - self.start + self.head
        pieces: List[Chunk] = []
        for chunk in self.chunks:
            if skip >= len(chunk):
                skip -= len(chunk)
                continue
            piece: Chunk = memoryview(chunk)[skip : skip + most] if skip or len(chunk) - skip > most else chunk
            skip = 0
            pieces.append(piece)
            most -= len(piece)
            if most <= 0:
                break
        return pieces

    def clear(self) -> None:
        self.chunks = deque()
        self.head = 0
        self.start = self.end


class Budget:
    """The outbox bytes of all streams of one end: past `limit`, the stream whose outbox is
    the largest stops reading its application, until the total falls to half of `limit`."""

    def __init__(self, limit: int = BUDGET) -> None:
        self.limit = limit
        self.total = 0
        self.peak = 0
        self.members: Dict[int, Stream] = {}
        self.changed: List[Stream] = []  # streams whose reading changed for another's sake

    def join(self, stream: Stream) -> None:
        self.members[id(stream)] = stream

    def leave(self, stream: Stream) -> None:
        self.members.pop(id(stream), None)

    def stop_the_largest(self) -> None:
        """Past the limit: the stream with the largest outbox that still reads stops reading."""
        reading = [s for s in self.members.values() if not s.budget_paused and s.outbox]
        if reading:
            largest = max(reading, key=lambda s: len(s.outbox))
            largest.budget_paused = True
            largest._update_reading()
            self.changed.append(largest)

    def shrink(self, size: int) -> None:
        self.total -= size
        if self.total <= self.limit // 2:
            for stream in self.members.values():
                if stream.budget_paused:
                    stream.budget_paused = False
                    stream._update_reading()
                    self.changed.append(stream)

    def take_changed(self) -> List[Stream]:
        changed, self.changed = self.changed, []
        return changed


class Stream:
    """One stream at one end: positions, outbox and replay, inbox, acks, EOF, heartbeats,
    the window, flow control and its share of the budget.

    The adapter feeds it: `app_data`/`app_eof`/`app_closed` from its application's socket,
    `on_frames` from the channel, `attach`/`detach` as channels come and go, `tick` when
    `deadline` passes. After each call it moves what is due: `to_channel()` to the channel
    (until empty), `to_app()` to the application, `eof_for_app` (then `gave_eof`), `reading`
    to pause or resume its application, and `finished` (with `why`) to let the stream go.
    """

    def __init__(self, role: str, window: float, now: float, budget: Optional[Budget] = None, cap: int = CAP, stream_id: str = "", owner: str = "") -> None:
        self.role = role
        self.window = window
        self.cap = cap
        self.id = stream_id
        self.owner = owner
        self.budget = budget if budget is not None else Budget(1 << 62)
        self.budget.join(self)
        self.io: Any = None  # the adapter's object for this stream (for budget changes)
        # what this end's application sent
        self.outbox = Outbox()
        self.sent = 0
        self.sent_eof = False
        self.peer_received = 0  # positions the peer has
        self.peer_consumed = 0  # bytes its application has taken
        self.flushed = 0  # positions the current channel has been given
        # what the peer's application sent
        self.inbox: Deque[bytes] = deque()
        self.inbox_size = 0
        self.received = 0
        self.received_eof = False
        self.delivered = 0  # bytes handed to this end's application
        self.eof_given = False
        self.app_buffered = 0  # of `delivered`, what the application's socket still holds
        self.acked_received = 0  # the counts of the last ack sent
        self.acked_consumed = 0
        self.ack_due: Optional[float] = None
        # the channel
        self.attached = False  # frames may go out
        self.awaiting_reply = False  # the laptop said hello and waits for the answer
        self.hellos = 0  # hellos this end has sent (the laptop)
        self.answered = False  # the relay ever answered one
        self.channel_writable = True
        self.out: List[bytes] = []
        # the application
        self.app_writable = True
        self.reading = True
        self.budget_paused = False
        self.app_gone = False
        # its life
        self.last_rx = now
        self.resumes = 0
        self.replayed = 0
        self.finished = False
        self.why = ""
        self.close_sent = False  # this end said C: it is confirmed by the peer's C
        self.close_confirmed = False  # the peer said C (first, or in answer)

    # --- positions ---------------------------------------------------------------------

    @property
    def out_positions(self) -> int:
        return self.sent + (1 if self.sent_eof else 0)

    @property
    def in_positions(self) -> int:
        return self.received + (1 if self.received_eof else 0)

    @property
    def consumed(self) -> int:
        return self.delivered - self.app_buffered

    @property
    def held(self) -> int:
        """Bytes this end keeps for the stream: its outbox and what waits for its application."""
        return len(self.outbox) + self.inbox_size

    @property
    def deadline(self) -> Optional[float]:
        """When `tick` is next due: an ack, or the window's end."""
        if self.finished:
            return None
        expiry = self.last_rx + self.window
        return expiry if self.ack_due is None else min(self.ack_due, expiry)

    # --- from the application ------------------------------------------------------------

    def app_data(self, data: bytes) -> None:
        """Bytes this end's application wrote into the stream."""
        if self.finished or self.sent_eof or self.app_gone:
            return  # a lingering application: read and dropped
        size = len(data)
        hot = self.attached and self.channel_writable and self.flushed == self.sent and size <= FRAME_DATA
        self.outbox.append(data)
        self.sent += size
        if hot:  # the usual case: straight out, one frame, no second look at the outbox
            self.out.append(HEADER.pack(b"D", size) + data)
            self.flushed = self.sent
        budget = self.budget
        budget.total += size
        if budget.total > budget.peak:
            budget.peak = budget.total
        if budget.total > budget.limit:
            budget.stop_the_largest()
        if self.sent - self.peer_consumed >= self.cap or self.budget_paused:
            self._update_reading()

    def app_eof(self) -> None:
        """This end's application ended its side (FIN): one more position, after its bytes."""
        if not self.sent_eof and not self.finished:
            self.sent_eof = True

    def app_closed(self) -> None:
        """This end's application can no longer take anything (closed, reset). The peer still
        gets every byte the application sent, then C: its own application ends cleanly."""
        if self.app_gone or self.finished:
            return
        self.app_gone = True
        self._drop_inbox()
        self.sent_eof = True  # nothing more comes from it
        self._maybe_close()

    def app_drained(self, buffered: int, now: float) -> None:
        """The application's socket took what waited (its buffer now holds `buffered`)."""
        self.app_writable = True
        self.app_buffered = buffered
        self._ack(now)

    # --- the channel -------------------------------------------------------------------------

    def hello(self, heartbeat: float) -> None:
        """The laptop's hello on a new channel. The first ever is `new`, and the stream's
        bytes follow it at once; a retry, whose first hello may have arrived, resumes
        (creating the stream only if the relay never saw its id) and waits for the answer."""
        fields: Dict[str, Any] = {"id": self.id, "owner": self.owner}
        if self.hellos == 0:
            fields.update(op="new", window=self.window, heartbeat=heartbeat)
        else:
            fields.update(op="resume", received=self.in_positions, consumed=self.consumed)
            if not self.answered:
                fields.update(create=True, window=self.window, heartbeat=heartbeat)
        self.hellos += 1
        self.out = [frame(b"H", json.dumps(fields).encode())]
        self.awaiting_reply = True
        self.channel_writable = True
        self.acked_received, self.acked_consumed = self.in_positions, self.consumed
        if fields["op"] == "new":
            self.attached = True  # its bytes go with the hello: the relay keeps them until it has dialled
            self.flushed = 0

    def attach(self, peer_received: int, peer_consumed: int, now: float) -> bool:
        """The relay takes a channel for this stream: answer, then replay what the peer
        lacks. False (and nothing changes) if it claims more than was ever sent."""
        if not self.peer_received <= peer_received <= self.out_positions or self.finished:
            return False
        self.last_rx = now
        self._acknowledged(peer_received, min(peer_consumed, peer_received))
        self.replayed += self.sent - min(peer_received, self.sent)
        reply = {"received": self.in_positions, "consumed": self.consumed, "replaying": self.sent - min(peer_received, self.sent)}
        self.out = [frame(b"R", json.dumps(reply).encode())]
        self.acked_received, self.acked_consumed = self.in_positions, self.consumed
        self._start_sending(peer_received)
        return True

    def detach(self) -> None:
        """The channel died; the window keeps running from the last frame it carried."""
        self.attached = False
        self.awaiting_reply = False
        self.out = []

    def on_frames(self, frames: List[Tuple[bytes, bytes]], now: float, app_buffered: int) -> None:
        """Frames from the channel. FrameError: they break the protocol (the channel goes)."""
        if self.finished:
            return
        self.last_rx = now
        self.app_buffered = app_buffered
        for kind, payload in frames:
            if kind == b"D" and not self.awaiting_reply:  # the hot path: checked first, handled inline
                if self.received_eof:
                    raise FrameError("data after the end of data")
                size = len(payload)
                self.received += size
                if not self.app_gone:
                    self.inbox.append(payload)
                    self.inbox_size += size
                if self.received - self.acked_received >= ACK_EVERY:
                    self._ack(now)
                elif self.ack_due is None:
                    self.ack_due = now + ACK_DELAY
                continue
            if self.awaiting_reply:
                self._on_reply(kind, payload)
            elif kind == b"A":
                if len(payload) != ACK.size:
                    raise FrameError("an ack of %d bytes" % len(payload))
                received, consumed = ACK.unpack(payload)
                self._acknowledged(received, consumed)
            elif kind == b"K":
                if self.role == RELAY and self.attached:
                    self.out.append(HEARTBEAT_FRAME)
            elif kind == b"E":
                if not self.received_eof:  # a repeated E counts once
                    self.received_eof = True
                    self._ack(now)
            elif kind == b"C":
                self.close_confirmed = True
                if not self.close_sent and self.attached:
                    self._send_close()  # the answer: the peer forgets the stream only once it has it
                self._finish("closed by the %s" % ("relay" if self.role == LAPTOP else "laptop"))
            else:
                raise FrameError("a %r frame in a stream" % (kind,))
            if self.finished:
                return
        if self.sent_eof or self.received_eof:  # only then can both ends be done
            self._maybe_close()

    def heartbeat(self) -> None:
        """The laptop's, each keepalive: the relay's window restarts, and its answer ours."""
        if self.attached and not self.awaiting_reply and not self.finished:
            self.out.append(HEARTBEAT_FRAME)

    def tick(self, now: float, app_buffered: int) -> None:
        """Time passed: a delayed ack, or the window's end (nothing from the peer for it)."""
        if self.finished:
            return
        self.app_buffered = app_buffered
        if self.ack_due is not None and now >= self.ack_due:
            self._ack(now)
        if now >= self.last_rx + self.window:
            self._finish("nothing from the %s for %.0f s (window %g s)" % ("relay" if self.role == LAPTOP else "laptop", now - self.last_rx, self.window))

    def close(self, why: str) -> None:
        """End the stream from this end (shutdown, `down`, a dead server): C if attached."""
        if not self.finished:
            if self.attached and not self.awaiting_reply:
                self._send_close()
            self._finish(why)

    # --- what goes out -----------------------------------------------------------------------

    def to_channel(self) -> bytes:
        """The next bytes for the channel (control frames, then data as far as it is
        writable), b"" when there is nothing: call again after each write."""
        if self.attached and self.channel_writable and (self.flushed < self.sent or (self.sent_eof and self.flushed == self.sent)):
            self._flush()
        out = self.out
        if not out:
            return b""
        if len(out) == 1 or sum(len(piece) for piece in out) <= COALESCE:
            self.out = []
            return out[0] if len(out) == 1 else b"".join(out)
        return out.pop(0)

    @property
    def more_to_send(self) -> bool:
        """Data the channel has not had, and it takes more now: `to_channel` has more."""
        return bool(self.out) or (self.attached and self.channel_writable and self.flushed < self.sent)

    def to_app(self) -> bytes:
        """What the application should get now (all of it once the stream is over); call again
        while it returns bytes: a large inbox comes a piece at a time."""
        inbox = self.inbox
        if not inbox or self.app_gone or not (self.app_writable or self.finished):
            return b""
        if len(inbox) == 1 or self.inbox_size <= COALESCE:
            data = inbox[0] if len(inbox) == 1 else b"".join(inbox)
            inbox.clear()
        else:
            data = inbox.popleft()  # a large one: as it came, no copy; call again for the rest
        self.delivered += len(data)
        self.inbox_size -= len(data)
        return data

    @property
    def eof_for_app(self) -> bool:
        """The application should get its end (FIN) now: after the last byte that arrived."""
        return (self.received_eof or self.finished) and not self.inbox and not self.eof_given and not self.app_gone

    def gave_eof(self) -> None:
        self.eof_given = True

    # --- inside ----------------------------------------------------------------------------------

    def _start_sending(self, position: int) -> None:
        self.attached = True
        self.awaiting_reply = False
        self.channel_writable = True
        self.flushed = min(position, self.out_positions)

    def _flush(self) -> None:
        """Data from `flushed` on, up to one batch, then E once every byte is out."""
        if self.flushed < self.sent:
            pieces = self.outbox.read(self.flushed, BATCH)
            for piece in pieces:
                view = memoryview(piece)
                while len(view) > FRAME_DATA:
                    self.out.append(HEADER.pack(b"D", FRAME_DATA) + view[:FRAME_DATA])  # one copy: the frame
                    self.flushed += FRAME_DATA
                    view = view[FRAME_DATA:]
                self.out.append(HEADER.pack(b"D", len(view)) + view)
                self.flushed += len(view)
        if self.sent_eof and self.flushed == self.sent:
            self.out.append(EOF_FRAME)
            self.flushed += 1

    def _on_reply(self, kind: bytes, payload: bytes) -> None:
        try:
            received, consumed, _ = parse_reply(kind, payload, self.peer_received, self.out_positions)
        except StreamGone as gone:
            self._finish(str(gone))
            return
        resuming = not (self.hellos == 1 and not self.answered)
        self.answered = True
        self.awaiting_reply = False
        self._acknowledged(received, consumed)
        if resuming:
            self.resumes += 1
            self.replayed += self.sent - min(received, self.sent)
            self._start_sending(received)

    def _ack(self, now: float) -> None:
        """Acknowledge what arrived and what the application took; while it still holds
        some and takes more, look again ACK_DELAY later."""
        self.ack_due = None
        if not self.attached or self.awaiting_reply:
            return  # the next hello or reply carries the counts
        consumed = self.consumed
        if self.in_positions != self.acked_received or consumed != self.acked_consumed:
            self.acked_received, self.acked_consumed = self.in_positions, consumed
            self.out.append(b"A\x00\x00\x00\x10" + ACK.pack(self.in_positions, consumed))
        if (self.app_buffered or self.inbox) and self.app_writable and not self.app_gone:
            self.ack_due = now + ACK_DELAY

    def _acknowledged(self, received: int, consumed: int) -> None:
        if received > self.out_positions or consumed > received:
            raise FrameError("the peer claims %d positions received, %d consumed, of %d sent" % (received, consumed, self.out_positions))
        if received > self.peer_received:
            self.peer_received = received
        if consumed > self.peer_consumed:
            self.peer_consumed = consumed
            dropped = self.outbox.drop_to(consumed)
            if dropped:
                self.budget.shrink(dropped)
        self._update_reading()

    def _update_reading(self) -> None:
        """Read the application while the peer's has taken all but CAP, and the budget allows."""
        in_flight = self.sent - self.peer_consumed
        if self.reading and (self.budget_paused or in_flight >= self.cap):
            self.reading = False
        elif not self.reading and not self.budget_paused and in_flight < self.cap // 2:
            self.reading = True

    def _maybe_close(self) -> None:
        """Over when both ends are done: our bytes all received and the peer's all here (or
        our application gone and our bytes all received)."""
        if self.finished or not self.attached or self.awaiting_reply:
            return
        ours_done = self.sent_eof and self.peer_received >= self.out_positions
        if ours_done and (self.app_gone or self.received_eof):
            self._send_close()
            self._finish("ended" if not self.app_gone else "the %s's end closed" % ("client" if self.role == LAPTOP else "server"))

    def _send_close(self) -> None:
        self.out.append(CLOSE_FRAME)
        self.close_sent = True

    @property
    def unconfirmed(self) -> bool:
        """Ended here with a C the peer has not answered yet: if the channel dies now, the
        peer may still hold the stream (the adapter has it closed by id later)."""
        return self.finished and self.close_sent and not self.close_confirmed

    def _finish(self, why: str) -> None:
        self.finished = True
        self.why = why
        self.reading = True  # a lingering application is read, and what it sends dropped
        self.ack_due = None
        dropped = len(self.outbox)
        self.outbox.clear()
        if dropped:
            self.budget.shrink(dropped)
        self.budget.leave(self)

    def _drop_inbox(self) -> None:
        self.inbox.clear()
        self.inbox_size = 0


class StreamTable:
    """The relay's streams by id, and the ids of those that ended (so that a hello retried
    after they ended cannot start them again). Sans-IO: the relay dials, this decides."""

    def __init__(self, budget: Budget, most: int = MAX_STREAMS) -> None:
        self.budget = budget
        self.most = most
        self.streams: Dict[str, Stream] = {}
        self.ended: OrderedDict[str, str] = OrderedDict()
        self.total = 0
        self.resumes = 0

    def open(self, request: Dict[str, Any], now: float) -> Tuple[Stream, bool]:
        """The stream a new or resume hello names: (stream, created). HelloError otherwise."""
        stream_id = request["id"]
        stream = self.streams.get(stream_id)
        if request["op"] == "resume" and stream is not None:
            return stream, False
        if stream is not None or stream_id in self.ended:
            raise HelloError("bad stream id" if request["op"] == "new" else "unknown")
        if request["op"] == "resume" and not (request.get("create") and request["received"] == 0):
            raise HelloError("unknown")
        if len(self.streams) >= self.most:
            raise HelloError("too many streams (at most %d)" % self.most)
        window = max(request["window"], 2 * request["heartbeat"])
        stream = Stream(RELAY, window, now, self.budget, stream_id=stream_id, owner=request.get("owner", ""))
        stream.app_writable = False  # until the server is dialled
        self.streams[stream_id] = stream
        self.total += 1
        return stream, True

    def greet(self, request: Dict[str, Any], now: float) -> Tuple[Optional[Stream], bytes]:
        """A stream's hello (new or resume): the stream it attaches the channel to, and an
        answer to send at once. A stream this creates is answered by `attach(0, 0, now)`
        once its server is dialled; a resumed one has its reply in `to_channel()`."""
        try:
            stream, created = self.open(request, now)
        except HelloError as error:
            return None, frame(b"R", json.dumps({"error": str(error)}).encode())
        if created:
            return stream, b""
        if not stream.attach(request["received"], request["consumed"], now):
            stream.close("the laptop claimed more than was sent")
            self.forget(stream)
            return None, frame(b"R", json.dumps({"error": "unknown"}).encode())
        self.resumes += 1
        return stream, b""

    def forget(self, stream: Stream) -> None:
        """An ended stream: its id is remembered, never served again."""
        if self.streams.get(stream.id) is stream:
            del self.streams[stream.id]
            self.ended[stream.id] = stream.why
            while len(self.ended) > ENDED_KEPT:
                self.ended.popitem(last=False)

    def of_owner(self, owner: str) -> List[Stream]:
        return [stream for stream in self.streams.values() if owner and stream.owner == owner]
