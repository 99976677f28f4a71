#!/usr/bin/env python3
"""gt-remote's relay: keeps each client's server connection open while the SSH path is down.

Uploaded to the remote and run there with the system python3 (3.8 or newer, stdlib only);
gt-remote never imports it (tunnel/resumable.py holds the laptop's end, with its own copy of
the frame helpers). It listens on a Unix socket (0600, in a 0700 directory) that the local
supervisor reaches through an SSH direct-streamlocal channel, and dials only 127.0.0.1:PORT.
Each stream is one channel; when a channel dies the stream waits, holding the server socket,
until the supervisor reattaches it (RESUME) or the resume window ends.

Wire format on a channel, both ways: 1-byte type, 4-byte big-endian length, payload.
  H hello (JSON, at most MAX_HELLO bytes, within HELLO_DEADLINE of the channel opening):
      {"op": "new", "id", "window", "heartbeat"} | {"op": "resume", "id", "received"}
      | {"op": "close", "ids": [...]} | {"op": "stats"} | {"op": "lease", "name", "ttl"}
  R reply (JSON: {"received": N, "replaying": N} | {"closed": N} | {"holders": [...]}
      | {"error": TEXT})
  D data   E end of data (counts as one position)   A ack (8-byte received count)   C close
  K heartbeat: the laptop sends one each keepalive, the relay answers with one
Both ends count positions sent and received, keep what the other has not acknowledged
(at most CAP bytes per stream, BUDGET in all, then they stop reading their socket) and
replay it after a resume. The resume window runs from the last frame received on the
stream, not from when sshd notices a dead channel: after a silent partition or a killed
supervisor, the server connection is released within window + one keepalive.

The lease op (relay started with --leases DIR) keeps a supervisor's lease, the file the
remote script's lease_touch writes (bootstrap/lease.py), and answers with the other live
holders, as its lease_others does: an idle tunnel's health checks then start no shell.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import socket
import stat
import string
import struct
import sys
import time
from collections import deque
from typing import Any, Deque, Dict, List, Optional, Set, Tuple, Union

CAP = 4 * 1024 * 1024  # unacknowledged bytes per stream and direction
BUDGET = 64 * 1024 * 1024  # unacknowledged bytes across all streams: then the largest stops
ACK_EVERY = 512 * 1024  # acknowledge at least this often...
ACK_DELAY = 0.05  # ...and this soon after data arrives
FRAME_DATA = 256 * 1024  # the most data one frame carries
HIGH_WATER = 128 * 1024  # a socket's write buffer beyond this: stop writing, keep it in our queues
SMALL = 16 * 1024  # small reads are merged, so a trickle of bytes is not a pile of objects
HEADER = struct.Struct(">cI")
ACK = struct.Struct(">Q")
MAX_FRAME = 1024 * 1024
MAX_HELLO = 16 * 1024
HELLO_DEADLINE = 10.0  # a channel that has not sent a whole hello by then is closed
MAX_WINDOW = 24 * 3600.0
MAX_STREAMS = 1024
MAX_CHANNELS = MAX_STREAMS + 256
MAX_PENDING_HELLOS = 64
MAX_POSITION = 1 << 62
MAX_LEASE_TTL = 24 * 3600
LEASE_NAME_CHARS = frozenset(string.ascii_letters + string.digits + "._-")
DEFAULT_LEASE_TTL = 60  # a lease file without a number in it, as lease_others reads it
HEARTBEAT = b"K"


class FrameError(ValueError):
    """The bytes on a channel are not frames: the channel is closed, never the relay."""


class HelloError(ValueError):
    """A hello the relay will not serve: answered with the reason, then closed."""


def frame(kind: bytes, payload: bytes = b"") -> bytes:
    return HEADER.pack(kind, len(payload)) + payload


class FrameReader:
    """Splits a byte stream into (type, payload) frames; sans-IO, bounded by `limit` (and the
    first frame, the hello or its reply, by `first_limit`)."""

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


def _position(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_POSITION:
        raise HelloError("received must be a byte count")
    return value


def _lease_name(value: Any) -> str:
    """A file name in the leases directory: no path, no dot file and no *.tmp (temporaries)."""
    if not isinstance(value, str) or not 1 <= len(value) <= 120 or value.startswith(".") or value.endswith(".tmp") or not set(value) <= LEASE_NAME_CHARS:
        raise HelloError("bad lease name")  # a .tmp name would be skipped by every lister
    return value


def _lease_ttl(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_LEASE_TTL:
        raise HelloError("ttl must be a whole number of seconds, more than 0 and at most %d" % MAX_LEASE_TTL)
    return value


def parse_hello(payload: bytes) -> Dict[str, Any]:
    """A hello's fields, checked; HelloError names what is wrong. Sans-IO, for the fuzzer too."""
    try:
        request = json.loads(payload.decode("utf-8"))
    except (ValueError, RecursionError):  # RecursionError: JSON nested too deeply
        raise HelloError("malformed hello: not JSON") from None
    if not isinstance(request, dict):
        raise HelloError("malformed hello: not a JSON object")
    op = request.get("op")
    if op == "stats":
        return {"op": "stats"}
    if op == "new":
        heartbeat = request.get("heartbeat")
        return {
            "op": "new",
            "id": _stream_id(request.get("id")),
            "window": _seconds(request.get("window", 900), "window", MAX_WINDOW),
            "heartbeat": 0.0 if heartbeat is None else _seconds(heartbeat, "heartbeat", 3600.0),
        }
    if op == "resume":
        return {"op": "resume", "id": _stream_id(request.get("id")), "received": _position(request.get("received"))}
    if op == "close":
        ids = request.get("ids")
        if not isinstance(ids, list) or len(ids) > MAX_STREAMS:
            raise HelloError("ids must be a list of at most %d stream ids" % MAX_STREAMS)
        return {"op": "close", "ids": [_stream_id(one) for one in ids]}
    if op == "lease":
        return {"op": "lease", "name": _lease_name(request.get("name")), "ttl": _lease_ttl(request.get("ttl"))}
    raise HelloError("unknown op")


Chunk = Union[bytes, memoryview]


class Outbox:
    """Bytes sent and not yet acknowledged, kept as the chunks they came in: appending and
    acknowledging never copy what is kept (a bytearray would move all of it on each)."""

    def __init__(self) -> None:
        self.chunks: Deque[bytes] = deque()
        self.head = 0  # acknowledged bytes at the start of chunks[0]
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def append(self, data: bytes, pending: Deque[Chunk]) -> None:
        """Keep `data`; also queue it in `pending` (the part the channel has not had)."""
        chunks = self.chunks
        self.size += len(data)
        if chunks and len(chunks[-1]) + len(data) <= SMALL and (pending[-1] is chunks[-1] if pending else True):
            merged = chunks[-1] + data
            chunks[-1] = merged
            if pending:
                pending[-1] = merged
            return
        chunks.append(data)
        pending.append(data)

    def drop(self, count: int) -> None:
        """The peer acknowledged `count` more bytes."""
        self.size -= count
        count += self.head
        chunks = self.chunks
        while chunks and count >= len(chunks[0]):
            count -= len(chunks.popleft())
        self.head = count if chunks else 0

    def all(self) -> Deque[Chunk]:
        """Everything unacknowledged, for a replay (views, no copies)."""
        replay: Deque[Chunk] = deque(self.chunks)
        if replay and self.head:
            replay[0] = memoryview(self.chunks[0])[self.head :]
        return replay

    def clear(self) -> None:
        self.chunks = deque()
        self.head = self.size = 0


class Stream:
    """One client's stream: the server socket and whichever channel is attached now."""

    def __init__(self, relay: Relay, stream_id: str, window: float) -> None:
        self.relay = relay
        self.loop = asyncio.get_running_loop()
        self.id = stream_id
        self.window = window
        self.server: Optional[asyncio.Transport] = None
        self.channel: Optional[ChannelProtocol] = None
        self.unacked = Outbox()  # server -> client bytes the client has not acknowledged
        self.pending: Deque[Chunk] = deque()  # of those, what the current channel has not had
        self.inbox: Deque[bytes] = deque()  # client -> server bytes the server's socket has not taken
        self.inbox_size = 0
        self.acked = 0  # bytes the client has acknowledged
        self.sent = 0  # bytes read from the server
        self.sent_eof = False  # the server ended its side (one more position)
        self.eof_flushed = False
        self.received = 0  # positions received from the client
        self.received_eof = False
        self.ack_sent = 0
        self.ack_timer: Optional[asyncio.TimerHandle] = None
        self.last_rx = self.loop.time()  # the window runs from here
        self.expiry: Optional[asyncio.TimerHandle] = self.loop.call_at(self.last_rx + window, self._expiry_due)
        self.reading_paused = False
        self.budget_paused = False
        self.server_full = False  # the server socket's buffer is over its high-water mark
        self.closed = False

    # --- the channel -------------------------------------------------------------------

    def attach(self, channel: ChannelProtocol, peer_received: int) -> bool:
        """Replay what the client has not received; False if it claims more than we sent."""
        if not self.acked <= peer_received <= self.sent + (1 if self.sent_eof else 0):
            return False
        old, self.channel = self.channel, channel
        if old is not None and old is not channel:
            old.stream = None
            old.abort()  # its sshd may be hung: do not keep its unsent bytes waiting
        self.last_rx = self.loop.time()
        self._acknowledged(peer_received)
        self.pending = self.unacked.all()
        self.eof_flushed = peer_received > self.sent
        replaying = self.sent - self.acked
        self.relay.bytes_replayed += replaying
        channel.send(frame(b"R", json.dumps({"received": self.received, "replaying": replaying}).encode()))
        self.flush()
        return True

    def detach(self, channel: ChannelProtocol) -> None:
        """The channel died; the window keeps running from the last frame it carried."""
        if channel is self.channel:
            self.channel = None

    def _expiry_due(self) -> None:
        self.expiry = None
        if self.closed:
            return
        due = self.last_rx + self.window
        now = self.loop.time()
        if now < due:  # frames came since: look again when the window from the last one ends
            self.expiry = self.loop.call_at(due, self._expiry_due)
            return
        self.relay.log("stream %s: nothing from the laptop for %.0f s (window %g s): closing it" % (self.id[:8], now - self.last_rx, self.window))
        self.close()

    def on_frame(self, kind: bytes, payload: bytes) -> None:
        self.last_rx = self.loop.time()
        if kind == b"D":
            self.received += len(payload)
            if self.server is not None:
                if self.server_full or self.inbox:
                    self.inbox.append(payload)
                    self.inbox_size += len(payload)
                else:
                    self.server.write(payload)
            if self.received - self.ack_sent >= ACK_EVERY:
                self._send_ack()
            elif self.ack_timer is None:
                self.ack_timer = self.loop.call_later(ACK_DELAY, self._send_ack)
        elif kind == HEARTBEAT:
            if self.channel is not None:
                self.channel.send(HEARTBEAT_FRAME)
        elif kind == b"A" and len(payload) == ACK.size:
            self._acknowledged(ACK.unpack(payload)[0])
            self._maybe_done()
        elif kind == b"E":
            if not self.received_eof:
                self.received += 1
                self.received_eof = True
                self.drain_inbox()
            self._send_ack()
            self._maybe_done()
        elif kind == b"C":
            self.close()

    def _send_ack(self) -> None:
        """Acknowledge what the server's socket took, not what waits in its buffer: the laptop
        then sends no more than CAP ahead of the server, while the channel is always read (so
        acks never queue behind data the server is not taking, which would deadlock an echo)."""
        if self.ack_timer is not None:
            self.ack_timer.cancel()
            self.ack_timer = None
        waiting = self.inbox_size + (self.server.get_write_buffer_size() if self.server is not None else 0)
        if waiting and self.received_eof:
            waiting += 1  # the end goes out after the buffer
        delivered = self.received - waiting
        if self.channel is not None and delivered > self.ack_sent:
            self.ack_sent = delivered
            self.channel.send(b"A\x00\x00\x00\x08" + ACK.pack(delivered))
        if waiting and not self.closed and not self.server_full:
            self.ack_timer = self.loop.call_later(ACK_DELAY, self._send_ack)

    def _acknowledged(self, count: int) -> None:
        count_bytes = min(count, self.sent)
        if count_bytes > self.acked:
            done = count_bytes - self.acked
            self.unacked.drop(done)
            self.acked = count_bytes
            self.relay.unacked_total -= done
            self.relay.after_ack()
        self.update_reading()

    def _maybe_done(self) -> None:
        """Both directions ended and the client has all of ours: nothing left to resume."""
        if self.received_eof and self.sent_eof and self.acked == self.sent and self.channel is not None:
            self.close()

    def flush(self) -> None:
        """Write what the channel has not had yet, as far as its buffer takes it."""
        channel = self.channel
        if channel is None:
            return
        pending = self.pending
        while pending and channel.writable:
            chunk = pending.popleft()
            channel.send(HEADER.pack(b"D", len(chunk)) + chunk)
        if self.sent_eof and not self.eof_flushed and not pending:
            self.eof_flushed = True
            channel.send(frame(b"E"))

    # --- the server socket -------------------------------------------------------------

    def from_server(self, data: bytes) -> None:
        size = len(data)
        self.sent += size
        self.relay.unacked_total += size
        channel = self.channel
        if channel is not None and channel.writable and not self.pending:
            self.unacked.append(data, self.pending)
            self.pending.clear()
            channel.send(HEADER.pack(b"D", size) + data)  # the hot path: one write, no copy kept
        else:
            self.unacked.append(data, self.pending)
            self.flush()
        if len(self.unacked) > self.relay.peak_unacked:
            self.relay.peak_unacked = len(self.unacked)
        self.update_reading()
        self.relay.check_budget()

    def update_reading(self) -> None:
        """Read the server while this stream is under its cap and not stopped by the budget."""
        server = self.server
        if server is None:
            return
        if not self.reading_paused and (self.budget_paused or len(self.unacked) >= CAP):
            self.reading_paused = True
            server.pause_reading()
        elif self.reading_paused and not self.budget_paused and len(self.unacked) < CAP // 2:
            self.reading_paused = False
            server.resume_reading()

    def drain_inbox(self) -> None:
        """Give the server what waited for its socket, then the client's end if it came."""
        server = self.server
        if server is None:
            return
        while self.inbox and not self.server_full:
            chunk = self.inbox.popleft()
            self.inbox_size -= len(chunk)
            server.write(chunk)
        if self.received_eof and not self.inbox and server.can_write_eof() and not server.is_closing():
            server.write_eof()

    def server_eof(self) -> None:
        self.sent_eof = True
        self.flush()

    def server_lost(self, exc: Optional[Exception]) -> None:
        self.server = None
        if exc is not None or not self.sent_eof:
            self.close()  # a reset: nothing to resume; the client learns it now or on RESUME

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.relay.streams.get(self.id) is self:  # a stream refused for its id is not the one registered
            del self.relay.streams[self.id]
        self.relay.unacked_total -= len(self.unacked)
        self.unacked.clear()  # its memory goes back now, not when the last reference does
        self.pending.clear()
        self.inbox.clear()
        self.inbox_size = 0
        for timer in (self.ack_timer, self.expiry):
            if timer is not None:
                timer.cancel()
        if self.server is not None:
            self.server.close()
        channel, self.channel = self.channel, None
        if channel is not None:
            channel.send(frame(b"C"))
            channel.stream = None
            channel.close()
        self.relay.after_ack()
        if MALLOC_TRIM is not None and self.sent + self.received >= TRIM_AFTER:
            self.loop.call_soon(MALLOC_TRIM, 0)  # after the transports have let go of their buffers


HEARTBEAT_FRAME = frame(HEARTBEAT)


class ServerProtocol(asyncio.Protocol):
    def __init__(self, stream: Stream) -> None:
        self.stream = stream

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.stream.server = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.stream.from_server(data)

    def eof_received(self) -> bool:
        self.stream.server_eof()
        return True

    def pause_writing(self) -> None:
        self.stream.server_full = True  # its resume_writing acknowledges; no timer meanwhile

    def resume_writing(self) -> None:
        self.stream.server_full = False
        self.stream.drain_inbox()
        self.stream._send_ack()  # the server took what was waiting: the laptop may send more

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.stream.server_lost(exc)


class ChannelProtocol(asyncio.Protocol):
    """One connection on the Unix socket: a hello, then the frames of one stream."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.reader = FrameReader(MAX_FRAME, MAX_HELLO)
        self.transport: Optional[asyncio.Transport] = None
        self.stream: Optional[Stream] = None
        self.greeted = False
        self.answered = False  # the hello is served: frames go to the stream
        self.pending = False  # counted in the relay's pending hellos
        self.writable = True
        self.backlog: List[Tuple[bytes, bytes]] = []  # frames that came with the hello
        self.deadline: Optional[asyncio.TimerHandle] = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.set_write_buffer_limits(high=HIGH_WATER)  # type: ignore[union-attr]
        self.relay.channels += 1
        if self.relay.channels > MAX_CHANNELS:
            self.refuse("too many channels (at most %d)" % MAX_CHANNELS)
            return
        if self.relay.pending_hellos >= MAX_PENDING_HELLOS:
            self.refuse("too many hellos in progress (at most %d)" % MAX_PENDING_HELLOS)
            return
        self.pending = True
        self.relay.pending_hellos += 1
        self.deadline = asyncio.get_running_loop().call_later(HELLO_DEADLINE, self.refuse, "no hello within %g s" % HELLO_DEADLINE)

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def pause_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def pause_writing(self) -> None:
        self.writable = False

    def resume_writing(self) -> None:
        self.writable = True
        if self.stream is not None:
            self.stream.flush()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.reader.feed(data)
        except FrameError as error:
            if self.greeted:
                self.abort()
            else:
                self.refuse(str(error))
            return
        if not self.answered:  # the hello is not answered yet: what came with it waits
            self.backlog += frames
            if not self.greeted and self.backlog:
                self._greet(*self.backlog.pop(0))
            return
        stream = self.stream
        if stream is not None:
            for kind, payload in frames:
                stream.on_frame(kind, payload)

    def _greet(self, kind: bytes, payload: bytes) -> None:
        """The first frame: whatever is wrong with it is answered with an error, then closed."""
        self.greeted = True
        self._hello_done()
        self.pause_reading()  # frames after the hello wait until the stream is attached
        try:
            if kind != b"H":
                raise HelloError("expected a hello")
            request = parse_hello(payload)
            op = request["op"]
            if op == "new":
                asyncio.ensure_future(self._new(request))
                return
            if op == "stats":
                self.reply(self.relay.stats())
            elif op == "close":
                self.reply({"closed": self.relay.close_streams(request["ids"])})
            elif op == "lease":
                self.reply({"holders": self.relay.keep_lease(request["name"], request["ttl"])})
            else:
                self.relay.resume_stream(self, request["id"], request["received"])
                self._attached()
        except HelloError as error:
            self.reply({"error": str(error)})
        except Exception as exc:  # noqa: BLE001 - a hello never kills the relay or hangs the channel
            self.relay.log("hello failed: %r" % (exc,))
            self.reply({"error": "malformed hello"})

    async def _new(self, request: Dict[str, Any]) -> None:
        try:
            await self.relay.new_stream(self, request["id"], max(request["window"], 2 * request["heartbeat"]))
            self._attached()
        except Exception as exc:  # noqa: BLE001
            self.relay.log("new stream failed: %r" % (exc,))
            self.reply({"error": "the relay could not open the stream"})

    def _attached(self) -> None:
        """The hello is answered: the frames that came with it, then the channel's own."""
        backlog, self.backlog = self.backlog, []
        self.answered = True
        stream = self.stream
        if stream is not None:
            for kind, payload in backlog:
                stream.on_frame(kind, payload)
        if self.stream is not None:
            self.resume_reading()

    def _hello_done(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None
        if self.pending:
            self.pending = False
            self.relay.pending_hellos -= 1

    def refuse(self, reason: str) -> None:
        self.deadline = None
        self._hello_done()
        self.reply({"error": reason})

    def reply(self, message: Dict[str, Any]) -> None:
        self.send(frame(b"R", json.dumps(message).encode()))
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self._hello_done()
        self.relay.channels -= 1
        self.transport = None
        if self.stream is not None:
            self.stream.detach(self)
            self.stream = None


LOOPBACK_HEX = ("0100007F", "00000000", "00000000000000000000000000000000", "0000000000000000FFFF00000100007F")

# Linux's sock_diag over netlink, as `ss` asks: only the listening sockets, each with its uid.
NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST_DUMP = 0x301  # NLM_F_REQUEST | NLM_F_DUMP
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_DUMP_INTR = 0x10  # the socket tables changed during the dump: it may have missed some
TCPF_LISTEN = 1 << 10
NLMSG_HEADER = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
DIAG_REQUEST = struct.Struct("=BBBBI48x")  # family, protocol, extensions, pad, states, a zero socket id
DIAG_PORT_AND_SOURCE = struct.Struct(">H2x16s")  # from the reply's socket id: source port, source address
DIAG_UID_AT, DIAG_MESSAGE_SIZE = 64, 72  # inet_diag_msg: its uid's offset, its size
LOOPBACK_SOURCES = {
    2: (bytes((127, 0, 0, 1)), bytes(4)),  # AF_INET: 127.0.0.1, 0.0.0.0
    10: (bytes(16), bytes(10) + b"\xff\xff" + bytes((127, 0, 0, 1))),  # AF_INET6: ::, ::ffff:127.0.0.1
}


def port_owner_uid(port: int) -> Optional[int]:
    """The uid of a LISTEN socket taking connections to 127.0.0.1:port, another account's
    first; None when nothing listens or there is nothing to ask. Asked over netlink: reading
    /proc/net/tcp walks every socket bucket of the host, milliseconds for each new stream."""
    try:
        uids = listener_uids(port)
    except (OSError, AttributeError, struct.error):  # no sock_diag (not Linux, a sandbox): /proc
        return port_owner_uid_from_proc(port)
    return _owner_among(uids)


def _owner_among(uids: List[int]) -> Optional[int]:
    others = [uid for uid in uids if uid != os.getuid()]
    return others[0] if others else (uids[0] if uids else None)


def listener_uids(port: int) -> List[int]:
    """The uids of the TCP listeners on port that take connections to 127.0.0.1, from sock_diag."""
    uids = []  # type: List[int]
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as diag:
        diag.settimeout(1.0)  # it answers at once; this only bounds a kernel that never does
        for family in (socket.AF_INET, socket.AF_INET6):
            request = DIAG_REQUEST.pack(family, socket.IPPROTO_TCP, 0, 0, TCPF_LISTEN)
            diag.send(NLMSG_HEADER.pack(NLMSG_HEADER.size + len(request), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST_DUMP, family, 0) + request)
            uids += _dumped_uids(diag, family, port)
    return uids


def _dumped_uids(diag: socket.socket, family: int, port: int) -> List[int]:
    uids = []  # type: List[int]
    while True:
        data = diag.recv(65536)
        offset = 0
        while offset + NLMSG_HEADER.size <= len(data):
            length, kind, flags = NLMSG_HEADER.unpack_from(data, offset)[:3]
            if flags & NLM_F_DUMP_INTR:
                raise OSError("sock_diag's dump was interrupted")
            if kind == NLMSG_DONE:
                if length >= NLMSG_HEADER.size + 4 and struct.unpack_from("=i", data, offset + NLMSG_HEADER.size)[0] < 0:
                    raise OSError("sock_diag's dump ended with an error")
                return uids
            if kind == NLMSG_ERROR or length < NLMSG_HEADER.size + DIAG_MESSAGE_SIZE or offset + length > len(data):
                raise OSError("sock_diag answered with an error or a short message")
            body = offset + NLMSG_HEADER.size
            source_port, source = DIAG_PORT_AND_SOURCE.unpack_from(data, body + 4)
            address = source[:4] if family == socket.AF_INET else source
            if source_port == port and address in LOOPBACK_SOURCES[family]:
                uids.append(struct.unpack_from("=I", data, body + DIAG_UID_AT)[0])
            offset += (length + 3) & ~3
        if not data:
            raise OSError("sock_diag closed before the end of its answer")


def port_owner_uid_from_proc(port: int) -> Optional[int]:
    """The same answer from /proc/net/tcp and tcp6, where netlink cannot be asked."""
    suffix = ":%04X" % port
    uids = []  # type: List[int]
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as handle:
                rows = handle.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if len(cols) > 7 and cols[3] == "0A" and cols[1].endswith(suffix) and cols[1][: -len(suffix)] in LOOPBACK_HEX and cols[7].isdigit():
                uids.append(int(cols[7]))
    return _owner_among(uids)


def touch_lease(directory: str, name: str, ttl: int) -> None:
    """Write `ttl` to the lease file, fresh: as lease_touch does, whole or not at all."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    temporary = os.path.join(directory, "." + name + ".tmp")  # lease_others skips dot files
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("%d\n" % ttl)
    os.replace(temporary, os.path.join(directory, name))


def live_leases(directory: str, mine: str, now: Optional[float] = None) -> List[str]:
    """The other leases still within their ttl, as lease_others finds them; it removes the
    expired ones, and so does this."""
    now_s = int(time.time() if now is None else now)
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    holders = []
    for name in names:
        if name == mine or name.startswith(".") or name.endswith(".tmp"):
            continue
        path = os.path.join(directory, name)
        try:
            found = os.lstat(path)
        except OSError:
            continue
        if not stat.S_ISREG(found.st_mode):
            continue  # only files are leases
        modified, digits = int(found.st_mtime), b""
        try:  # never blocks (a fifo swapped in), never follows a link swapped in
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            pass  # unreadable: no ttl in it, as lease_others reads such a file
        else:
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    continue
                digits = bytes(c for c in os.read(fd, 12) if 48 <= c <= 57)
            except OSError:
                pass
            finally:
                os.close(fd)
        ttl = int(digits) if digits else DEFAULT_LEASE_TTL
        if now_s - modified <= ttl:
            holders.append(name)
        else:
            try:
                os.unlink(path)
            except OSError:
                pass
    return holders


class Relay:
    def __init__(self, port: int, budget: int = BUDGET, leases: Optional[str] = None) -> None:
        self.port = port
        self.budget = budget
        self.leases = leases  # the directory of this port's leases, or None: no lease op
        self.streams: Dict[str, Stream] = {}
        self.started = time.time()
        self.streams_total = 0
        self.resumes = 0
        self.bytes_replayed = 0
        self.peak_unacked = 0
        self.unacked_total = 0
        self.peak_unacked_total = 0
        self.channels = 0
        self.pending_hellos = 0
        self.dialing: Set[str] = set()  # the ids of new streams whose server is being dialled

    def log(self, message: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        print("%s relay: %s" % (stamp, message), file=sys.stderr, flush=True)

    def check_budget(self) -> None:
        """Past the budget, the stream holding the most stops being read until acks come."""
        if self.unacked_total > self.peak_unacked_total:
            self.peak_unacked_total = self.unacked_total
        if self.unacked_total <= self.budget:
            return
        reading = [s for s in self.streams.values() if not s.budget_paused and s.server is not None]
        if reading:
            largest = max(reading, key=lambda s: len(s.unacked))
            largest.budget_paused = True
            largest.update_reading()

    def after_ack(self) -> None:
        if self.unacked_total <= self.budget // 2:
            for stream in list(self.streams.values()):
                if stream.budget_paused:
                    stream.budget_paused = False
                    stream.update_reading()

    async def new_stream(self, channel: ChannelProtocol, stream_id: str, window: float) -> None:
        if stream_id in self.streams or stream_id in self.dialing:  # one stream, one server connection
            channel.reply({"error": "bad stream id"})
            return
        if len(self.streams) + len(self.dialing) >= MAX_STREAMS:
            channel.reply({"error": "too many streams (at most %d)" % MAX_STREAMS})
            return
        owner = port_owner_uid(self.port)
        if owner is not None and owner != os.getuid():  # another account took the port: never dial it
            channel.reply({"error": "127.0.0.1:%d is held by uid %d, not by this user; not dialled" % (self.port, owner)})
            return
        stream = Stream(self, stream_id, window)
        self.dialing.add(stream_id)
        try:
            await asyncio.wait_for(asyncio.get_running_loop().create_connection(lambda: ServerProtocol(stream), "127.0.0.1", self.port), HELLO_DEADLINE)
        except (OSError, asyncio.TimeoutError) as exc:
            stream.close()
            reason = getattr(exc, "strerror", None) or str(exc) or "timed out"
            channel.reply({"error": "cannot reach 127.0.0.1:%d: %s" % (self.port, reason)})
            return
        finally:
            self.dialing.discard(stream_id)
        if channel.transport is None:  # the channel died while we dialled
            stream.close()
            return
        self.streams[stream_id] = stream
        self.streams_total += 1
        channel.stream = stream
        stream.attach(channel, 0)

    def resume_stream(self, channel: ChannelProtocol, stream_id: str, received: int) -> None:
        stream = self.streams.get(stream_id)
        if stream is None:
            channel.reply({"error": "unknown"})
            return
        channel.stream = stream
        if not stream.attach(channel, received):
            channel.stream = None
            stream.close()
            channel.reply({"error": "unknown"})
            return
        self.resumes += 1

    def close_streams(self, ids: List[str]) -> int:
        """`gt-remote down`: these streams will not be resumed, release their servers now."""
        closed = 0
        for stream_id in ids:
            stream = self.streams.get(stream_id)
            if stream is not None:
                stream.close()
                closed += 1
        if closed:
            self.log("closed %d stream(s) on request" % closed)
        return closed

    def keep_lease(self, name: str, ttl: int) -> List[str]:
        """Refresh `name`'s lease; the other live holders of the port's server."""
        if self.leases is None:
            raise HelloError("this relay keeps no leases (started without --leases)")
        try:
            touch_lease(self.leases, name, ttl)
            return live_leases(self.leases, name)
        except OSError as exc:
            raise HelloError("cannot keep the lease: %s" % (exc.strerror or exc)) from None

    def stats(self) -> Dict[str, object]:
        return {
            "pid": os.getpid(),
            "streams": len(self.streams),
            "streams_total": self.streams_total,
            "resumes": self.resumes,
            "bytes_replayed": self.bytes_replayed,
            "peak_unacked": self.peak_unacked,
            "peak_unacked_total": self.peak_unacked_total,
            "unacked_total": self.unacked_total,
            "cap": CAP,
            "budget": self.budget,
            "channels": self.channels,
            "unacked": {sid[:8]: len(stream.unacked) for sid, stream in self.streams.items()},
        }


def _malloc_trim() -> Any:
    """glibc's malloc_trim, or None: after a busy stream closes, its freed buffers go back to
    the system instead of staying in the heap (a fixed mmap threshold would do it too, but
    costs a third of the throughput)."""
    try:
        import ctypes

        return ctypes.CDLL(None).malloc_trim
    except Exception:  # noqa: BLE001 - not glibc: the allocator keeps its own policy
        return None


MALLOC_TRIM = _malloc_trim()
TRIM_AFTER = 1024 * 1024  # a stream that moved this much gives its memory back when it closes


async def serve(socket_path: str, port: int, budget: int = BUDGET, leases: Optional[str] = None) -> None:
    relay = Relay(port, budget, leases)
    directory = os.path.dirname(socket_path)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    os.chmod(directory, 0o700)
    if os.path.exists(socket_path):
        os.unlink(socket_path)  # the pid file check ran before we were started: this one is stale
    old_umask = os.umask(0o177)
    try:
        server = await asyncio.get_running_loop().create_unix_server(lambda: ChannelProtocol(relay), socket_path)
    finally:
        os.umask(old_umask)
    os.chmod(socket_path, 0o600)
    relay.log("listening on %s for 127.0.0.1:%d (pid %d)" % (socket_path, port, os.getpid()))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    server.close()
    for stream in list(relay.streams.values()):
        stream.close()
    try:
        os.unlink(socket_path)
    except OSError:
        pass
    relay.log("stopped")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="gt-remote relay (runs on the remote)")
    parser.add_argument("--socket", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--budget", type=int, default=BUDGET, help="unacknowledged bytes across all streams")
    parser.add_argument("--leases", help="the directory of this port's leases (the lease op)")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.socket, args.port, args.budget, args.leases))
    return 0


if __name__ == "__main__":
    sys.exit(main())
