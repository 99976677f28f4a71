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
      | {"op": "lease", "name", "ttl"} | {"op": "listen", "owner", "port", "window", "heartbeat"}
  R reply (JSON), the first frame from the relay: {"received", "consumed", "replaying"}
      | {"closed": N} | {"holders": [...], "streams": N} | {"listening": PORT} | {"error": TEXT}
  D data   E end of data (counts as one position)   C close: this end's application is gone
  A ack (two 8-byte counts: positions received, bytes the application has taken)
  K heartbeat: the laptop sends one each keepalive, the relay answers each with one
  N notice, on a listen channel only (JSON): {"id"} a back connection's stream waits to be
      attached | {"refused": TEXT} a connection from another account was closed

Back tunnels: the relay listens on the gaming PC's 127.0.0.1:PORT for a `listen` hello, and
keeps listening across drops. Each connection it accepts from this user becomes a stream the
relay made (`StreamTable.accept`), announced with N on every listen channel until a channel
takes it; the laptop's stream for it is `peer_opened`, and its first hello is a resume at 0.
From then on it is a stream like any other: same positions, replay, windows and budget.

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

Its size (about 550 lines) is one state machine, the Stream class, whose decisions read best
side by side; the wire (frames.py) and the outbox and budget (outbox.py) are apart. It also
offers their names, as it always has, to the ends and the tests.
"""

from __future__ import annotations

import json
from collections import OrderedDict, deque
from typing import Any, Deque, Dict, List, Optional, Tuple

from gt_remote.protocol.frames import (
    ACK,
    ACK_DELAY,
    ACK_EVERY,
    BATCH,
    BUDGET,
    CAP,
    CLOSE_FRAME,
    COALESCE,
    ENDED_KEPT,
    EOF_FRAME,
    FRAME_DATA,
    HEADER,
    HEARTBEAT_FRAME,
    HIGH_WATER,
    LAPTOP,
    LEASE_NAME_CHARS,
    LINGER,
    MAX_FRAME,
    MAX_HEARTBEAT,
    MAX_HELLO,
    MAX_LEASE_TTL,
    MAX_POSITION,
    MAX_REPLY,
    MAX_STREAMS,
    MAX_WINDOW,
    RELAY,
    SMALL,
    TRIM_AFTER,
    FrameError,
    FrameReader,
    HelloError,
    StreamGone,
    announcement,
    frame,
    parse_hello,
    parse_notice,
    parse_reply,
    refusal_notice,
)
from gt_remote.protocol.outbox import Budget, Chunk, Outbox


class Stream:
    """One stream at one end: positions, outbox and replay, inbox, acks, EOF, heartbeats,
    the window, flow control and its share of the budget.

    The adapter feeds it: `app_data`/`app_eof`/`app_closed` from its application's socket,
    `on_frames` from the channel, `attach`/`detach` as channels come and go, `tick` when
    `deadline` passes. After each call it moves what is due: `to_channel()` to the channel
    (until empty), `to_app()` to the application, `eof_for_app` (then `gave_eof`), `reading`
    to pause or resume its application, and `finished` (with `why`) to let the stream go.
    """

    def __init__(self, role: str, window: float, now: float, budget: Optional[Budget[Stream]] = None, cap: int = CAP, stream_id: str = "", owner: str = "", peer_opened: bool = False) -> None:
        self.role = role
        # The laptop's stream of a back tunnel: the relay accepted its connection and made the
        # stream, so its first hello attaches (resume at 0), never creates.
        self.peer_opened = peer_opened
        self.accepted_on: Optional[int] = None  # the relay's: the back tunnel's port it was accepted on
        self.attaches = 0  # the relay's: channels that took the stream (0: a back stream not yet announced and taken)
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
        if self.hellos == 0 and not self.peer_opened:
            fields.update(op="new", window=self.window, heartbeat=heartbeat)
        else:  # a back stream's first hello too: the relay made it, and holds what its client sent
            fields.update(op="resume", received=self.in_positions, consumed=self.consumed)
            if not self.answered and not self.peer_opened:
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
        if self.attaches:  # a first attach sends what waited, which is no replay
            self.replayed += self.sent - min(peer_received, self.sent)
        self.attaches += 1
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
        first_answer = not self.answered
        sent_with_hello = first_answer and self.hellos == 1 and not self.peer_opened  # a `new`: its bytes went with it
        self.answered = True
        self.awaiting_reply = False
        self._acknowledged(received, consumed)
        if sent_with_hello:
            return
        if not (first_answer and self.peer_opened):  # a back stream's first attach is no resume
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

    def __init__(self, budget: Budget[Stream], most: int = MAX_STREAMS) -> None:
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
        resumed = stream.attaches > 0  # else a back stream's first attach
        if not stream.attach(request["received"], request["consumed"], now):
            stream.close("the laptop claimed more than was sent")
            self.forget(stream)
            return None, frame(b"R", json.dumps({"error": "unknown"}).encode())
        self.resumes += resumed
        return stream, b""

    def accept(self, stream_id: str, port: int, owner: str, window: float, heartbeat: float, now: float) -> Stream:
        """A back tunnel's connection the relay accepted (and found to be this user's): its
        stream waits, reading its client into the outbox, until the laptop attaches it
        (a resume at 0) after the announcement; its window runs from now. HelloError when full."""
        if len(self.streams) >= self.most:
            raise HelloError("too many streams (at most %d)" % self.most)
        stream = Stream(RELAY, max(window, 2 * heartbeat), now, self.budget, stream_id=stream_id, owner=owner)
        stream.accepted_on = port
        self.streams[stream_id] = stream
        self.total += 1
        return stream

    def waiting(self, owner: str, port: int) -> List[Stream]:
        """A back tunnel's streams that no channel has taken yet: announced again to each new
        listen channel, as the last announcement may have been lost with its connection."""
        return [s for s in self.streams.values() if s.accepted_on == port and s.owner == owner and not s.attaches and not s.finished]

    def forget(self, stream: Stream) -> None:
        """An ended stream: its id is remembered, never served again."""
        if self.streams.get(stream.id) is stream:
            del self.streams[stream.id]
            self.ended[stream.id] = stream.why
            while len(self.ended) > ENDED_KEPT:
                self.ended.popitem(last=False)

    def of_owner(self, owner: str) -> List[Stream]:
        return [stream for stream in self.streams.values() if owner and stream.owner == owner]
