#!/usr/bin/env python3
"""gt-remote's relay: keeps each client's server connection open while the SSH path is down.

Uploaded to the remote and run there with the system python3 (3.8 or newer, stdlib only);
gt-remote never imports it. It listens on a Unix socket (0600, in a 0700 directory) that
the local supervisor reaches through an SSH direct-streamlocal channel, and dials only
127.0.0.1:PORT. Each stream is one channel; when a channel dies the stream waits, holding
the server socket, until the supervisor reattaches it (RESUME) or the resume window ends.

Wire format on a channel, both ways: 1-byte type, 4-byte big-endian length, payload.
  H hello (JSON: {"op": "new", "id", "window"} | {"op": "resume", "id", "received"} | {"op": "stats"})
  R reply (JSON: {"received": N} | {"error": TEXT})
  D data   E end of data (counts as one position)   A ack (8-byte received count)   C close
Both ends count positions sent and received, keep what the other has not acknowledged
(at most CAP bytes, then they stop reading their socket) and replay it after a resume.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import struct
import sys
import time
from typing import Dict, List, Optional

CAP = 4 * 1024 * 1024  # unacknowledged bytes per stream and direction
ACK_EVERY = 256 * 1024  # acknowledge at least this often...
ACK_DELAY = 0.05  # ...and this soon after data arrives
CHUNK = 64 * 1024
HEADER = struct.Struct(">cI")
MAX_FRAME = 1024 * 1024


def frame(kind: bytes, payload: bytes = b"") -> bytes:
    return HEADER.pack(kind, len(payload)) + payload


class FrameReader:
    """Splits a byte stream into (type, payload) frames."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def feed(self, data: bytes) -> List[tuple]:
        self.buffer += data
        frames = []
        while len(self.buffer) >= HEADER.size:
            kind, length = HEADER.unpack_from(self.buffer)
            if length > MAX_FRAME:
                raise ValueError("frame too large")
            end = HEADER.size + length
            if len(self.buffer) < end:
                break
            frames.append((kind, bytes(self.buffer[HEADER.size : end])))
            del self.buffer[:end]
        return frames


class Stream:
    """One client's stream: the server socket and whichever channel is attached now."""

    def __init__(self, relay: Relay, stream_id: str, window: float) -> None:
        self.relay = relay
        self.id = stream_id
        self.window = window
        self.server: Optional[asyncio.Transport] = None
        self.channel: Optional[ChannelProtocol] = None
        self.unacked = bytearray()  # server -> client bytes the client has not acknowledged
        self.acked = 0  # bytes the client has acknowledged
        self.sent = 0  # bytes read from the server
        self.sent_eof = False  # the server ended its side (one more position)
        self.received = 0  # positions received from the client
        self.received_eof = False
        self.ack_sent = 0
        self.ack_timer: Optional[asyncio.TimerHandle] = None
        self.expiry: Optional[asyncio.TimerHandle] = None
        self.reading_paused = False
        self.server_paused_us = False  # the server socket's buffer is full: stop reading the channel
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
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None
        self._acknowledged(peer_received)
        data = bytes(self.unacked)
        self.relay.bytes_replayed += len(data)
        channel.send(frame(b"R", json.dumps({"received": self.received, "replaying": len(data)}).encode()))
        for start in range(0, len(data), CHUNK):
            channel.send(frame(b"D", data[start : start + CHUNK]))
        if self.sent_eof and peer_received <= self.sent:
            channel.send(frame(b"E"))
        if self.server_paused_us:
            channel.pause_reading()
        return True

    def detach(self, channel: ChannelProtocol) -> None:
        if channel is not self.channel or self.closed:
            return
        self.channel = None
        self.expiry = asyncio.get_running_loop().call_later(self.window, self.expire)

    def expire(self) -> None:
        self.relay.log("stream %s not reattached within %g s: closing it" % (self.id[:8], self.window))
        self.close()

    def on_frame(self, kind: bytes, payload: bytes) -> None:
        if kind == b"D":
            self.received += len(payload)
            if self.server is not None:
                self.server.write(payload)
            self._schedule_ack()
        elif kind == b"E":
            if not self.received_eof:
                self.received += 1
                self.received_eof = True
                if self.server is not None and self.server.can_write_eof():
                    self.server.write_eof()
            self._send_ack()
            self._maybe_done()
        elif kind == b"A" and len(payload) == 8:
            self._acknowledged(struct.unpack(">Q", payload)[0])
            self._maybe_done()
        elif kind == b"C":
            self.close()

    def _schedule_ack(self) -> None:
        if self.received - self.ack_sent >= ACK_EVERY:
            self._send_ack()
        elif self.ack_timer is None:
            self.ack_timer = asyncio.get_running_loop().call_later(ACK_DELAY, self._send_ack)

    def _send_ack(self) -> None:
        if self.ack_timer is not None:
            self.ack_timer.cancel()
            self.ack_timer = None
        if self.channel is not None and self.received != self.ack_sent:
            self.ack_sent = self.received
            self.channel.send(frame(b"A", struct.pack(">Q", self.received)))

    def _acknowledged(self, count: int) -> None:
        count_bytes = min(count, self.sent)
        if count_bytes > self.acked:
            del self.unacked[: count_bytes - self.acked]
            self.acked = count_bytes
        if self.reading_paused and len(self.unacked) < CAP // 2 and self.server is not None:
            self.reading_paused = False
            self.server.resume_reading()

    def _maybe_done(self) -> None:
        """Both directions ended and the client has all of ours: nothing left to resume."""
        if self.received_eof and self.sent_eof and not self.unacked and self.acked == self.sent and self.channel is not None:
            self.close()

    # --- the server socket -------------------------------------------------------------

    def from_server(self, data: bytes) -> None:
        self.unacked += data
        self.sent += len(data)
        self.relay.peak_unacked = max(self.relay.peak_unacked, len(self.unacked))
        if self.channel is not None:
            for start in range(0, len(data), CHUNK):
                self.channel.send(frame(b"D", data[start : start + CHUNK]))
        if len(self.unacked) >= CAP and not self.reading_paused and self.server is not None:
            self.reading_paused = True
            self.server.pause_reading()

    def server_eof(self) -> None:
        self.sent_eof = True
        if self.channel is not None:
            self.channel.send(frame(b"E"))

    def server_lost(self, exc: Optional[Exception]) -> None:
        self.server = None
        if exc is not None or not self.sent_eof:
            self.close()  # a reset: nothing to resume; the client learns it now or on RESUME

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.relay.streams.pop(self.id, None)
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
        self.stream.server_paused_us = True
        if self.stream.channel is not None:
            self.stream.channel.pause_reading()

    def resume_writing(self) -> None:
        self.stream.server_paused_us = False
        if self.stream.channel is not None:
            self.stream.channel.resume_reading()

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.stream.server_lost(exc)


class ChannelProtocol(asyncio.Protocol):
    """One connection on the Unix socket: a hello, then the frames of one stream."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.reader = FrameReader()
        self.transport: Optional[asyncio.Transport] = None
        self.stream: Optional[Stream] = None
        self.greeted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def pause_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.reader.feed(data)
        except ValueError:
            self.close()
            return
        for kind, payload in frames:
            if not self.greeted:
                self.greeted = True
                if kind != b"H":
                    self.close()
                    return
                asyncio.ensure_future(self.hello(payload))
                continue
            if self.stream is not None:
                self.stream.on_frame(kind, payload)

    async def hello(self, payload: bytes) -> None:
        self.pause_reading()  # frames after the hello wait until the stream is attached
        try:
            request = json.loads(payload.decode())
            op = request.get("op")
            if op == "stats":
                self.reply(self.relay.stats())
            elif op == "new":
                await self.relay.new_stream(self, str(request["id"]), float(request.get("window", 900)))
            elif op == "resume":
                self.relay.resume_stream(self, str(request["id"]), int(request["received"]))
            else:
                self.reply({"error": "unknown op"})
        except (ValueError, KeyError, TypeError, AttributeError):
            self.reply({"error": "malformed hello"})
        if not (self.stream is not None and self.stream.server_paused_us):
            self.resume_reading()  # a server that cannot take more keeps this channel paused

    def reply(self, message: Dict[str, object]) -> None:
        self.send(frame(b"R", json.dumps(message).encode()))
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.transport = None
        if self.stream is not None:
            self.stream.detach(self)
            self.stream = None


LOOPBACK_HEX = ("0100007F", "00000000", "00000000000000000000000000000000", "0000000000000000FFFF00000100007F")


def port_owner_uid(port: int) -> Optional[int]:
    """The uid of a LISTEN socket taking connections to 127.0.0.1:port, another account's
    first; None when nothing listens or there is no /proc/net/tcp to ask."""
    suffix = ":%04X" % port
    found = None  # type: Optional[int]
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as handle:
                rows = handle.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if len(cols) > 7 and cols[3] == "0A" and cols[1].endswith(suffix) and cols[1][: -len(suffix)] in LOOPBACK_HEX and cols[7].isdigit():
                uid = int(cols[7])
                if uid != os.getuid():
                    return uid
                found = uid
    return found


class Relay:
    def __init__(self, port: int) -> None:
        self.port = port
        self.streams: Dict[str, Stream] = {}
        self.started = time.time()
        self.streams_total = 0
        self.resumes = 0
        self.bytes_replayed = 0
        self.peak_unacked = 0

    def log(self, message: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        print("%s relay: %s" % (stamp, message), file=sys.stderr, flush=True)

    async def new_stream(self, channel: ChannelProtocol, stream_id: str, window: float) -> None:
        if stream_id in self.streams or len(stream_id) < 32:
            channel.reply({"error": "bad stream id"})
            return
        owner = port_owner_uid(self.port)
        if owner is not None and owner != os.getuid():  # another account took the port: never dial it
            channel.reply({"error": "127.0.0.1:%d is held by uid %d, not by this user; not dialled" % (self.port, owner)})
            return
        stream = Stream(self, stream_id, window)
        try:
            await asyncio.get_running_loop().create_connection(lambda: ServerProtocol(stream), "127.0.0.1", self.port)
        except OSError as exc:
            channel.reply({"error": "cannot reach 127.0.0.1:%d: %s" % (self.port, exc.strerror or exc)})
            return
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

    def stats(self) -> Dict[str, object]:
        return {
            "pid": os.getpid(),
            "streams": len(self.streams),
            "streams_total": self.streams_total,
            "resumes": self.resumes,
            "bytes_replayed": self.bytes_replayed,
            "peak_unacked": self.peak_unacked,
            "cap": CAP,
            "unacked": {sid[:8]: len(stream.unacked) for sid, stream in self.streams.items()},
        }


async def serve(socket_path: str, port: int) -> None:
    relay = Relay(port)
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
    args = parser.parse_args(argv)
    asyncio.run(serve(args.socket, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
