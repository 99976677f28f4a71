#!/usr/bin/env python3
"""gt-remote's relay: keeps each client's server connection open while the SSH path is down.

Uploaded to the remote and run there with the system python3 (3.8 or newer, stdlib only):
the uploaded file is built (gt_remote/remote/relay/build.py) from the stream core,
gt_remote/protocol/stream.py, and the adapter both ends share, gt_remote/protocol/pipe.py,
each put in place of its import below, and this file. The core holds the protocol (frames,
hellos, positions, replay, acks, windows, flow control and the budget); this file only
connects it to the sockets.

It listens on a Unix socket (0600, in a 0700 directory) that the local supervisor reaches
through an SSH direct-streamlocal channel, and dials only 127.0.0.1:PORT; a connection is
used only once the socket that answered it is known to be this user's (peer_uid). Each stream is one channel; when a channel dies
the stream waits, holding the server socket, until the supervisor reattaches it (resume)
or the resume window ends. The wire format is described in the core.

The lease op (relay started with --leases DIR) keeps a supervisor's lease, the file the
remote script's lease_touch writes (gt_remote/remote/lease.py), and answers with the other live
holders, as its lease_others does: an idle tunnel's health checks then start no shell.
The load op answers with the machine's load figures, read from /proc (and, in a container,
its cgroup's CPU counter), for `gt-remote pick`: measuring them starts no process either.

It is one file of about 580 lines because it is uploaded as one program (with the protocol
modules inlined by build.py): its sockets, the check of whose socket answered a dial (sock_diag
and /proc), the leases and the ops cannot import anything of gt-remote's but the protocol.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import os
import pwd
import re
import signal
import socket
import stat
import struct
import sys
import time
from typing import Any, Dict, List, Optional

from gt_remote.protocol.mux import MUX_MAGIC, MuxEnd, parse_target
from gt_remote.protocol.pipe import StreamPipe
from gt_remote.protocol.stream import (
    BUDGET,
    CAP,
    HIGH_WATER,
    MAX_FRAME,
    MAX_HELLO,
    MAX_STREAMS,
    Budget,
    FrameError,
    FrameReader,
    HelloError,
    Stream,
    StreamTable,
    announcement,
    frame,
    parse_hello,
    refusal_notice,
)

HELLO_DEADLINE = 10.0  # a channel that has not sent a whole hello by then is closed
MAX_CHANNELS = MAX_STREAMS + 256
WAITING_MOST = 64  # a back tunnel's connections waiting for the laptop to take them
REFUSAL_EVERY = 60.0  # another account's refused connections: logged and told at most this often
MAX_PENDING_HELLOS = 64
DEFAULT_LEASE_TTL = 60  # a lease file without a number in it, as lease_others reads it


class ServerPipe(StreamPipe):
    """One stream's sockets at the relay: the server connection and the channel attached
    now. It holds no protocol state: the core has it, and StreamPipe moves its bytes."""

    def __init__(self, relay: Relay, core: Stream) -> None:
        self.relay = relay
        self.server: Optional[asyncio.Transport] = None
        self.channel: Optional[ChannelProtocol] = None
        self.start_pipe(core, relay.loop)

    def send_to_channel(self, data: bytes) -> None:
        if self.channel is not None:
            self.channel.send(data)

    def app(self) -> Optional[asyncio.Transport]:
        server = self.server
        return server if server is not None and not server.is_closing() else None

    def ended_here(self) -> None:
        self.relay.table.forget(self.core)
        channel, self.channel = self.channel, None
        if channel is not None:
            channel.pipe = None
            channel.close()
        if self.core.why and self.core.why != "ended":
            self.relay.log("stream %s ended: %s" % (self.core.id[:8], self.core.why))

    async def dial(self, channel: ChannelProtocol) -> None:
        """A new stream's server connection, used only once the socket that answered it is
        known to be this user's: a listener of another account (on any address that takes
        connections to 127.0.0.1) is closed before a byte goes either way."""
        port = self.relay.port
        try:
            transport, server = await asyncio.wait_for(self.loop.create_connection(lambda: ServerProtocol(self), "127.0.0.1", port), HELLO_DEADLINE)
        except (OSError, asyncio.TimeoutError) as exc:
            self.refuse("cannot reach 127.0.0.1:%d: %s" % (port, getattr(exc, "strerror", None) or str(exc) or "timed out"))
            return
        refused = await self.whose(transport, port)
        if refused is not None or self.ended:  # another account's, or closed while it dialled (`down`, its window)
            transport.abort()
            if refused is not None:
                self.refuse(refused)
            return
        core = self.core
        if self.channel is channel and not core.attached:
            core.attach(0, 0, self.loop.time())
        if server.lost:  # the server closed it while it was checked: as if just after
            self.app_lost()
            return
        self.server = transport  # type: ignore[assignment]
        core.app_writable = True
        server.verify()  # what it sent while it was checked, then the rest
        self.pump()

    async def whose(self, transport: asyncio.BaseTransport, port: int) -> Optional[str]:
        """Why this connection must not be used, or None when this user's socket answered it."""
        local = transport.get_extra_info("sockname")
        local_port = local[1] if isinstance(local, tuple) else None
        if local_port is None or local_port == port:  # a connection to itself: nothing listened
            return "cannot reach 127.0.0.1:%d: nothing listens there" % port
        uid = await far_uid(self.loop, transport, port, local_port)
        if uid == os.getuid():
            return None
        if uid is not None:
            return "127.0.0.1:%d is held by %s, not by this user; closed before a byte was sent" % (port, account(uid))
        return "127.0.0.1:%d answered, but the socket that answered cannot be found to check whose it is; not used" % port

    def refuse(self, reason: str) -> None:
        """The server cannot be had: the channel that asked is told why; a channel that
        resumed the stream meanwhile gets its close."""
        channel = self.channel
        if channel is not None and not self.core.attached:
            self.channel = None
            channel.reply({"error": reason})
        self.core.close(reason)
        self.pump()

    def take_channel(self, channel: ChannelProtocol) -> None:
        old, self.channel = self.channel, channel
        if old is not None and old is not channel:
            old.pipe = None
            old.abort()  # its sshd may be hung: do not keep its unsent bytes waiting

    def lose_channel(self, channel: ChannelProtocol) -> None:
        if channel is self.channel:
            self.channel = None
            self.core.detach()
            self.pump()


class ServerProtocol(asyncio.Protocol):
    """A server connection the relay dialled (or, as BackProtocol, accepted): not used before
    it is known whose socket is at the far end (`verify`)."""

    def __init__(self, pipe: ServerPipe) -> None:
        self.pipe = pipe
        self.lost = False
        self.verified = False
        self.early = []  # type: List[bytes]  # what came before the check: held, never used unless it passes
        self.early_eof = False
        self.transport = None  # type: Optional[asyncio.Transport]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.set_write_buffer_limits(high=HIGH_WATER)  # type: ignore[attr-defined]
        # Nothing is taken from it before the check. On Python 3.8 to 3.10 this pause comes
        # before the transport adds its reader, which then reads anyway: data_received holds
        # those bytes and pauses again, and they wait for the check with the rest.
        transport.pause_reading()  # type: ignore[attr-defined]

    def verify(self) -> None:
        """The far end is this user's: what it sent meanwhile goes in, and reading resumes."""
        self.verified = True
        early, self.early = self.early, []
        for data in early:
            self.data_received(data)
        if self.early_eof:
            self.eof_received()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if not self.verified:
            self.early.append(data)
            if self.transport is not None:
                self.transport.pause_reading()
            return
        pipe = self.pipe
        core = pipe.core
        core.app_data(data)
        if len(core.outbox) > pipe.relay.peak_unacked:
            pipe.relay.peak_unacked = len(core.outbox)
        pipe.pump()

    def eof_received(self) -> bool:
        if not self.verified:
            self.early_eof = True
            return True
        self.pipe.app_ended_its_side()
        return True

    def pause_writing(self) -> None:
        self.pipe.core.app_writable = False  # its resume_writing acknowledges; no timer meanwhile

    def resume_writing(self) -> None:
        self.pipe.app_took()

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.lost = True
        if self.pipe.server is None:
            return  # never used: dial() decides what becomes of the stream
        self.pipe.server = None
        self.pipe.app_lost()


class ChannelProtocol(asyncio.Protocol):
    """One connection on the Unix socket: a hello, then the frames of one stream."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.reader = FrameReader(MAX_FRAME, MAX_HELLO)
        self.transport: Optional[asyncio.Transport] = None
        self.pipe: Optional[ServerPipe] = None
        self.listener: Optional[BackListener] = None  # a listen channel's back tunnel
        self.greeted = False
        self.pending = False  # counted in the relay's pending hellos
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

    def pause_writing(self) -> None:
        if self.pipe is not None:
            self.pipe.core.channel_writable = False

    def resume_writing(self) -> None:
        if self.pipe is not None:
            self.pipe.core.channel_writable = True
            self.pipe.pump()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.reader.feed(data)
            if not self.greeted and frames:
                self._greet(*frames.pop(0))
            pipe = self.pipe
            if pipe is not None and frames:
                pipe.on_frames(frames)
            elif self.listener is not None and frames:
                self.listener.on_frames(self, frames)
        except FrameError as error:
            if self.greeted:
                self.abort()  # the stream waits for a channel that speaks the protocol
            else:
                self.refuse(str(error))

    def _greet(self, kind: bytes, payload: bytes) -> None:
        """The first frame: whatever is wrong with it is answered with an error, then closed."""
        self.greeted = True
        self._hello_done()
        try:
            if kind != b"H":
                raise HelloError("expected a hello")
            request = parse_hello(payload)
            op = request["op"]
            if op in ("new", "resume"):
                self.relay.open_stream(self, request)
            elif op == "stats":
                self.reply(self.relay.stats(request["owner"]))
            elif op == "close":
                self.reply({"closed": self.relay.close_streams(request["ids"], request["owner"])})
            elif op == "listen":
                self.relay.listen(self, request)
            elif op == "load":
                self.reply(self.relay.load())
            else:
                self.reply({"holders": self.relay.keep_lease(request["name"], request["ttl"]), "streams": len(self.relay.table.of_owner(request["name"]))})
        except HelloError as error:
            self.reply({"error": str(error)})
        except Exception as exc:  # noqa: BLE001 - a hello never kills the relay or hangs the channel
            self.relay.log("hello failed: %r" % (exc,))
            self.reply({"error": "malformed hello"})

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
        pipe, self.pipe = self.pipe, None
        if pipe is not None:
            pipe.lose_channel(self)
        listener, self.listener = self.listener, None
        if listener is not None:
            listener.lose_channel(self)


class BackProtocol(ServerProtocol):
    """A connection a back tunnel's listener accepted: not read before its peer is known to
    be this user's; then the client of a stream the relay made (ServerProtocol's part)."""

    def __init__(self, listener: BackListener) -> None:
        super().__init__(None)  # type: ignore[arg-type]  # the pipe is made once the peer is checked
        self.listener = listener

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        asyncio.ensure_future(self.listener.take(self, transport))  # type: ignore[arg-type]

    def eof_received(self) -> bool:
        keep = super().eof_received()
        self._left_early()
        return keep

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.lost = True
        if self.pipe is None:
            return
        super().connection_lost(exc)
        self._left_early()

    def _left_early(self) -> None:
        """Its client ended before the laptop took the stream, having sent nothing: nothing to
        carry, so the stream does not wait a window holding a slot (nor have the laptop dial
        its service for nobody)."""
        pipe = self.pipe
        if pipe is None or not self.verified:
            return
        core = pipe.core
        if not core.attaches and not core.sent and not core.finished:
            core.close("its client left before the laptop took it")
            pipe.pump()


class BackListener:
    """A back tunnel's listener on 127.0.0.1:PORT, held by the relay and not by sshd: an SSH
    drop leaves it listening, and the next connection's `listen` finds it. Each connection
    from this user becomes a stream the laptop attaches after the announcement (N); one from
    another account is closed before a byte moves. It closes at `down` (the close op by
    owner), when the relay stops, or after a window with no word from any listen channel."""

    def __init__(self, relay: Relay, port: int, owner: str, window: float, heartbeat: float) -> None:
        self.relay = relay
        self.port = port
        self.owner = owner
        self.window = max(window, 2 * heartbeat)
        self.heartbeat = heartbeat
        self.server = None  # type: Optional[asyncio.AbstractServer]
        self.channels = []  # type: List[ChannelProtocol]
        self.last_rx = relay.loop.time()
        self.accepted = 0
        self.refused = 0
        self.refusal_said_at = -REFUSAL_EVERY
        self.closed = False
        self.servers = []  # type: List[asyncio.AbstractServer]
        self.timer = None  # type: Optional[asyncio.TimerHandle]

    async def bind(self) -> None:
        """Listen on 127.0.0.1:PORT, and on [::1]:PORT where the remote has IPv6 loopback (a
        client that asks for `localhost` may try ::1 first: no other account may hold it
        there), or HelloError naming whoever holds the port."""
        loop = self.relay.loop
        try:
            self.server = await loop.create_server(lambda: BackProtocol(self), "127.0.0.1", self.port, reuse_address=True)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise HelloError("127.0.0.1:%d on the remote is held by %s" % (self.port, port_holder(self.port))) from None
            raise HelloError("cannot listen on 127.0.0.1:%d on the remote: %s" % (self.port, exc.strerror or exc)) from None
        try:
            self.servers.append(await loop.create_server(lambda: BackProtocol(self), "::1", self.port, reuse_address=True))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                self.server.close()
                raise HelloError("[::1]:%d on the remote is held by %s" % (self.port, port_holder(self.port))) from None
            # no IPv6 loopback there (EADDRNOTAVAIL, EAFNOSUPPORT): 127.0.0.1 is the only way in
        self.relay.log("back tunnel: listening on 127.0.0.1:%d for %s" % (self.port, self.owner))
        self._arm()

    def add_channel(self, channel: ChannelProtocol) -> None:
        """A listen channel (after a reconnect, the new one; older ones are aborted: their
        connection is likely dead). Every stream no channel took yet is announced on it."""
        for old in self.channels:
            old.listener = None
            old.abort()
        self.channels = [channel]
        channel.listener = self
        self.last_rx = self.relay.loop.time()
        channel.send(frame(b"R", json.dumps({"listening": self.port, "accepted": self.accepted, "refused": self.refused}).encode()))
        for core in self.relay.table.waiting(self.owner, self.port):
            channel.send(announcement(core.id))

    def lose_channel(self, channel: ChannelProtocol) -> None:
        if channel in self.channels:
            self.channels.remove(channel)

    def on_frames(self, channel: ChannelProtocol, frames: List[Any]) -> None:
        for kind, _ in frames:
            if kind != b"K":
                raise FrameError("a %r frame on a listen channel" % (kind,))
            self.last_rx = self.relay.loop.time()
            channel.send(frame(b"K"))

    def _arm(self) -> None:
        self.timer = self.relay.loop.call_at(self.last_rx + self.window, self._expire)

    def _expire(self) -> None:
        """No listen channel has spoken for a window: the laptop is gone for good."""
        if self.closed:
            return
        if self.relay.loop.time() < self.last_rx + self.window:
            self._arm()
            return
        self.close("nothing from the laptop for %g s (window)" % self.window)

    async def take(self, protocol: BackProtocol, transport: asyncio.Transport) -> None:
        """An accepted connection: used only once the socket that made it is this user's."""
        peer = transport.get_extra_info("peername")
        far_port = peer[1] if isinstance(peer, tuple) else None
        uid = None if far_port is None else await far_uid(self.relay.loop, transport, far_port, self.port)
        if uid != os.getuid():
            transport.abort()
            self._refused(uid)
            return
        if protocol.lost or self.closed:
            transport.abort()
            return
        if len(self.relay.table.waiting(self.owner, self.port)) >= WAITING_MOST:
            transport.abort()
            self.relay.log("back tunnel: a connection to 127.0.0.1:%d was closed: %d wait for the laptop already" % (self.port, WAITING_MOST))
            return
        loop = self.relay.loop
        try:
            core = self.relay.table.accept(os.urandom(16).hex(), self.port, self.owner, self.window, self.heartbeat, loop.time())
        except HelloError as error:
            transport.abort()
            self.relay.log("back tunnel: a connection to 127.0.0.1:%d was closed: %s" % (self.port, error))
            return
        self.accepted += 1
        pipe = ServerPipe(self.relay, core)
        pipe.server = transport
        protocol.pipe = pipe
        protocol.verify()  # what its client sent while it was checked, then the rest
        pipe.pump()
        for channel in self.channels:
            channel.send(announcement(core.id))

    def _refused(self, uid: Optional[int]) -> None:
        """Another account's connection, closed. Logged and told to the laptop at most once a
        minute (with the count), so a connect loop cannot fill the user's disk."""
        self.refused += 1
        now = self.relay.loop.time()
        if now < self.refusal_said_at + REFUSAL_EVERY:
            return
        self.refusal_said_at = now
        why = "a connection to 127.0.0.1:%d from %s was refused: not this user's; closed before a byte moved" % (self.port, account(uid) if uid is not None else "a socket that cannot be found")
        self.relay.log("back tunnel: %s (%d refused in all)" % (why, self.refused))
        for channel in self.channels:
            channel.send(refusal_notice(why, self.refused))

    def close(self, why: str) -> None:
        """No more connections; the streams not yet taken end (their clients get EOF)."""
        if self.closed:
            return
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
        if self.server is not None:
            self.server.close()
        for extra in self.servers:
            extra.close()
        for channel in self.channels:
            channel.listener = None
            channel.close()
        self.channels = []
        for core in self.relay.table.waiting(self.owner, self.port):
            core.close(why)
            core.io.pump()
        if self.relay.listeners.get(self.port) is self:
            del self.relay.listeners[self.port]
        self.relay.log("back tunnel: 127.0.0.1:%d closed: %s" % (self.port, why))


def account(uid: int) -> str:
    """A uid as a person reads it: `uid 1001 (bob)`."""
    try:
        return "uid %d (%s)" % (uid, pwd.getpwuid(uid).pw_name)
    except KeyError:
        return "uid %d" % uid


async def far_uid(loop: Any, transport: asyncio.BaseTransport, far_port: int, near_port: int) -> Optional[int]:
    """The uid of the socket at the far end of this loopback connection (its own port
    `far_port`, its peer `near_port`), waiting briefly for it to show; None if it never does."""
    deadline = loop.time() + PEER_LOOKUP_DEADLINE
    while True:
        uid = peer_uid(far_port, near_port)
        if uid is not None or loop.time() >= deadline or transport.is_closing():
            return uid
        await asyncio.sleep(0.01)  # the far end is still finishing its handshake


def port_holder(port: int) -> str:
    """Who listens on `port` (any address), for a refusal: an account, and a pid and its
    command when it is this user's process (others' are not visible)."""
    inodes = {}  # type: Dict[str, int]
    for cols in proc_tcp_rows():
        if len(cols) > 9 and cols[3] == "0A" and cols[1].rpartition(":")[2] == "%04X" % port and cols[7].isdigit():
            inodes[cols[9]] = int(cols[7])
    if not inodes:
        return "another program (its owner cannot be seen)"
    inode, uid = sorted(inodes.items())[0]
    process = _process_of_socket(inode) if uid == os.getuid() else None
    return account(uid) + (", %s" % process if process else "") + ("" if uid != os.getuid() else " (this user)")


def _process_of_socket(inode: str) -> Optional[str]:
    target = "socket:[%s]" % inode
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir("/proc/%s/fd" % pid)
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink("/proc/%s/fd/%s" % (pid, fd)) == target:
                    with open("/proc/%s/cmdline" % pid, "rb") as handle:
                        command = handle.read().split(b"\0")[0].decode("utf-8", "replace")
                    return "pid %s (%s)" % (pid, os.path.basename(command) or "?")
            except OSError:
                continue
    return None


# Linux's sock_diag over netlink, as `ss` asks: the sockets of one port pair, each with its uid.
NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST_DUMP = 0x301  # NLM_F_REQUEST | NLM_F_DUMP
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_DUMP_INTR = 0x10  # the socket tables changed during the dump: it may have missed some
# A connected socket's states, the far end's once it has accepted (ESTABLISHED) and after either
# side began to close: a SYN_RECV request shows no uid, TIME_WAIT none either.
CONNECTED_STATES = (1, 4, 5, 8, 9, 11)  # ESTABLISHED, FIN_WAIT1, FIN_WAIT2, CLOSE_WAIT, LAST_ACK, CLOSING
CONNECTED_STATE_MASK = sum(1 << state for state in CONNECTED_STATES)
NLMSG_HEADER = struct.Struct("=IHHII")  # length, type, flags, sequence, port id
DIAG_REQUEST = struct.Struct("=BBBBI")  # family, protocol, extensions, pad, states; then the socket id
DIAG_PORTS = struct.Struct(">HH")  # the socket id's source and destination ports (the kernel skips others)
DIAG_SOCKET_ID_REST = 44  # its addresses, interface and cookie: zero in the request
DIAG_SOCKET = struct.Struct(">BB2xHH16s16s")  # from the reply: family, state, ports, addresses
DIAG_UID_AT, DIAG_MESSAGE_SIZE = 64, 72  # inet_diag_msg: its uid's offset, its size
LOOPBACK_PEERS = {  # the address of either end of a loopback connection, as each family shows it
    2: (bytes((127, 0, 0, 1)),),  # AF_INET (only the first 4 of the 16 bytes)
    # AF_INET6: ::ffff:127.0.0.1 (a v4-mapped listener's), and ::1 (a back tunnel's listener there)
    10: (bytes(10) + b"\xff\xff" + bytes((127, 0, 0, 1)), bytes(15) + b"\x01"),
}
PEER_LOOKUP_DEADLINE = 1.0  # the far end shows as established within microseconds on loopback


class PeerUnknown(Exception):
    """The far end of a connection to the port could not be found: never sent a byte."""


def peer_uid(port: int, local_port: int) -> Optional[int]:
    """The uid of the socket that answered our connection from 127.0.0.1:local_port to
    127.0.0.1:port: the established one whose own port is `port` and whose peer is us. This
    is the connection actually made, not a listing of listeners before it: whatever address
    family or wildcard the listener chose (::ffff:0.0.0.0 included), its accepted socket is
    this one, and it carries the listener's uid. None when not (yet) to be seen.
    Asked over netlink; /proc/net/tcp and tcp6 where there is none."""
    try:
        return _peer_uid_from_diag(port, local_port)
    except (OSError, AttributeError, struct.error):  # no sock_diag (not Linux, a sandbox): /proc
        return peer_uid_from_proc(port, local_port)


def _peer_uid_from_diag(port: int, local_port: int) -> Optional[int]:
    uids = []  # type: List[int]
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as diag:
        diag.settimeout(1.0)  # it answers at once; this only bounds a kernel that never does
        for family in (socket.AF_INET, socket.AF_INET6):
            request = DIAG_REQUEST.pack(family, socket.IPPROTO_TCP, 0, 0, CONNECTED_STATE_MASK) + DIAG_PORTS.pack(port, local_port) + bytes(DIAG_SOCKET_ID_REST)
            diag.send(NLMSG_HEADER.pack(NLMSG_HEADER.size + len(request), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST_DUMP, family, 0) + request)
            uids += _dumped_peer_uids(diag, family, port, local_port)
    return _one_uid(uids)


def _one_uid(uids: List[int]) -> Optional[int]:
    """One socket answers a connection; should two show, another account's decides."""
    others = [uid for uid in uids if uid != os.getuid()]
    return others[0] if others else (uids[0] if uids else None)


def _dumped_peer_uids(diag: socket.socket, family: int, port: int, local_port: int) -> List[int]:
    uids = []  # type: List[int]
    loopbacks = LOOPBACK_PEERS[family]
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
            _, state, source_port, peer_port, source, peer = DIAG_SOCKET.unpack_from(data, body)
            width = 4 if family == socket.AF_INET else 16
            if state in CONNECTED_STATES and (source_port, peer_port) == (port, local_port) and source[:width] in loopbacks and peer[:width] in loopbacks:
                uids.append(struct.unpack_from("=I", data, body + DIAG_UID_AT)[0])
            offset += (length + 3) & ~3
        if not data:
            raise OSError("sock_diag closed before the end of its answer")


# 127.0.0.1 as /proc/net/tcp and tcp6 print it (each 32-bit word in host order, little-endian first).
LOOPBACK_HEX = (  # and ::1, in both byte orders
    "0100007F",
    "7F000001",
    "0000000000000000FFFF00000100007F",
    "00000000000000000000FFFF7F000001",
    "00000000000000000000000001000000",
    "00000000000000000000000000000001",
)


def proc_tcp_rows() -> List[List[str]]:
    """The socket rows of /proc/net/tcp and tcp6, split into their columns (none where unreadable)."""
    rows = []  # type: List[List[str]]
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as handle:
                rows += [row.split() for row in handle.read().splitlines()[1:]]
        except OSError:
            continue
    return rows


def peer_uid_from_proc(port: int, local_port: int) -> Optional[int]:
    """The same answer from /proc/net/tcp and tcp6, where netlink cannot be asked."""
    uids = []  # type: List[int]
    for cols in proc_tcp_rows():
        if len(cols) <= 7 or int(cols[3], 16) not in CONNECTED_STATES or not cols[7].isdigit():
            continue
        (address, _, own), (peer, _, theirs) = cols[1].partition(":"), cols[2].partition(":")
        if address in LOOPBACK_HEX and peer in LOOPBACK_HEX and (own, theirs) == ("%04X" % port, "%04X" % local_port):
            uids.append(int(cols[7]))
    return _one_uid(uids)


def touch_lease(directory: str, name: str, ttl: int) -> None:
    """Write `ttl` to the lease file, fresh: as lease_touch does, whole or not at all."""
    os.makedirs(directory, mode=0o700, exist_ok=True)
    temporary = os.path.join(directory, "." + name + ".tmp")  # lease_others skips dot files
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write("%d\n" % ttl)
    os.replace(temporary, os.path.join(directory, name))


LEASE_NAME = re.compile(r"[A-Za-z0-9._-]{1,120}\Z")  # as a supervisor names its lease; nothing else is one


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
        if name == mine or name.startswith(".") or name.endswith(".tmp") or not LEASE_NAME.match(name):
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


CONTAINER_MARKERS = ("/.dockerenv", "/run/.containerenv")  # Docker's and Podman's: /proc/loadavg there is the host's
CGROUP_COUNTERS = (  # the container's cumulative CPU time: (file, its key or "", the unit in seconds)
    ("/sys/fs/cgroup/cpu.stat", "usage_usec", 1e-6),  # cgroup v2
    ("/sys/fs/cgroup/cpuacct/cpuacct.usage", "", 1e-9),  # cgroup v1
    ("/sys/fs/cgroup/cpu,cpuacct/cpuacct.usage", "", 1e-9),
)
MIN_BUSY_WINDOW = 1.0  # a container's CPU use is measured over at least this many seconds


def read_first_line(path: str) -> str:
    with open(path) as handle:
        return handle.readline()


def machine_load() -> Dict[str, object]:
    """The `load` op's facts, read from /proc (gt_remote/base/load.py turns them into figures):
    the 1-minute load average, the CPUs this account may use, MemTotal and MemAvailable, and in
    a container, where /proc/loadavg is the host's, the container's CPU counter and the clock."""
    facts = {}  # type: Dict[str, object]
    try:
        facts["load_average"] = float(read_first_line("/proc/loadavg").split()[0])
    except (OSError, ValueError, IndexError):
        pass
    try:
        facts["cpus"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        facts["cpus"] = os.cpu_count()
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                key, _, rest = line.partition(":")
                if key in ("MemTotal", "MemAvailable"):
                    facts["mem_total_kb" if key == "MemTotal" else "mem_available_kb"] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    if any(os.path.exists(marker) for marker in CONTAINER_MARKERS):
        facts["container"] = True
        counter = cgroup_cpu_seconds()
        if counter is not None:
            facts["cgroup_cpu_s"] = counter
        try:
            facts["uptime_s"] = float(read_first_line("/proc/uptime").split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return facts


def cgroup_cpu_seconds() -> Optional[float]:
    """The CPU seconds the cgroup at /sys/fs/cgroup (a container's own) has used, or None."""
    for path, key, unit in CGROUP_COUNTERS:
        try:
            with open(path) as handle:
                for line in handle:
                    words = line.split()
                    if not key and len(words) == 1:
                        return int(words[0]) * unit
                    if key and len(words) == 2 and words[0] == key:
                        return int(words[1]) * unit
        except (OSError, ValueError):
            continue
    return None


class Relay:
    def __init__(self, port: int, budget: int = BUDGET, leases: Optional[str] = None) -> None:
        self.port = port
        self.loop = asyncio.get_running_loop()
        self.budget = Budget(budget)  # type: Budget[Stream]
        self.table = StreamTable(self.budget)
        self.leases = leases  # the directory of this port's leases, or None: no lease op
        self.started = time.time()
        self.bytes_replayed = 0
        self.peak_unacked = 0
        self.channels = 0
        self.pending_hellos = 0
        self.listeners = {}  # type: Dict[int, BackListener]  # back tunnels, by port
        self.cpu_sample = None  # type: Optional[tuple]  # (uptime_s, cgroup_cpu_s) a container's CPU use is measured from
        self.cpu_busy = None  # type: Optional[float]  # CPUs busy on average over the last window
        self.sample_cpu(machine_load())

    def log(self, message: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        print("%s relay: %s" % (stamp, message), file=sys.stderr, flush=True)

    def open_stream(self, channel: ChannelProtocol, request: Dict[str, Any]) -> None:
        """A new or resumed stream on this channel; a new one is answered once dialled."""
        existing = self.table.streams.get(request["id"])
        replayed = existing.replayed if existing is not None else 0
        core, answer = self.table.greet(request, self.loop.time())
        if core is None:
            channel.send(answer)
            channel.close()
            return
        pipe = core.io if core.io is not None else ServerPipe(self, core)
        pipe.take_channel(channel)
        channel.pipe = pipe
        if existing is None:
            asyncio.ensure_future(pipe.dial(channel))
            return
        self.bytes_replayed += core.replayed - replayed
        pipe.pump()

    def listen(self, channel: ChannelProtocol, request: Dict[str, Any]) -> None:
        """A back tunnel's listen channel: the listener this owner has on the port, or a new
        one; a port another tunnel's listener or another program holds is refused, named."""
        port, owner = request["port"], request["owner"]
        listener = self.listeners.get(port)
        if listener is not None and listener.owner != owner:
            raise HelloError("127.0.0.1:%d on the remote is held by gt-remote's relay for another tunnel (%s)" % (port, listener.owner))
        if listener is not None:
            listener.add_channel(channel)
            return
        listener = self.listeners[port] = BackListener(self, port, owner, request["window"], request["heartbeat"])
        asyncio.ensure_future(self._bind(listener, channel))

    async def _bind(self, listener: BackListener, channel: ChannelProtocol) -> None:
        try:
            await listener.bind()
        except HelloError as error:
            if self.listeners.get(listener.port) is listener:
                del self.listeners[listener.port]
            channel.reply({"error": str(error)})
            return
        if channel.transport is None:  # its channel went while it bound: the next listen finds it
            return
        listener.add_channel(channel)

    def close_streams(self, ids: List[str], owner: str = "") -> int:
        """`gt-remote down`: these streams (or all of this owner's) will not be resumed; the
        owner's back tunnels stop listening."""
        if owner:
            for listener in [one for one in self.listeners.values() if one.owner == owner]:
                listener.close("closed on request")
        cores = self.table.of_owner(owner) if owner else [self.table.streams[i] for i in ids if i in self.table.streams]
        for core in cores:
            core.close("closed on request")
            core.io.pump()
        if cores:
            self.log("closed %d stream(s) on request" % len(cores))
        return len(cores)

    def keep_lease(self, name: str, ttl: int) -> List[str]:
        """Refresh `name`'s lease; the other live holders of the port's server."""
        if self.leases is None:
            raise HelloError("this relay keeps no leases (started without --leases)")
        try:
            touch_lease(self.leases, name, ttl)
            return live_leases(self.leases, name)
        except OSError as exc:
            raise HelloError("cannot keep the lease: %s" % (exc.strerror or exc)) from None

    def sample_cpu(self, facts: Dict[str, object]) -> None:
        """In a container: the CPUs busy on average since the last sample at least
        MIN_BUSY_WINDOW ago (the first sample is taken as the relay starts)."""
        counter, clock = facts.get("cgroup_cpu_s"), facts.get("uptime_s")
        if not isinstance(counter, float) or not isinstance(clock, float):
            return
        if self.cpu_sample is not None:
            elapsed, used = clock - self.cpu_sample[0], counter - self.cpu_sample[1]
            if elapsed < MIN_BUSY_WINDOW:
                return  # too short a window: the last figure stands
            self.cpu_busy = used / elapsed if used >= 0 else None
        self.cpu_sample = (clock, counter)

    def load(self) -> Dict[str, object]:
        """The `load` op: this machine's figures, read from /proc and the cgroup files only."""
        facts = machine_load()
        self.sample_cpu(facts)
        if facts.get("container") and self.cpu_busy is not None:
            facts["cpu_busy"] = round(self.cpu_busy, 4)
        return facts

    def stats(self, owner: str = "") -> Dict[str, object]:
        streams = self.table.streams
        answer = {
            "pid": os.getpid(),
            "streams": len(streams),
            "streams_total": self.table.total,
            "resumes": self.table.resumes,
            "bytes_replayed": self.bytes_replayed,
            "peak_unacked": self.peak_unacked,
            "peak_unacked_total": self.budget.peak,
            "unacked_total": self.budget.total,
            "cap": CAP,
            "budget": self.budget.limit,
            "channels": self.channels,
            "unacked": {sid[:8]: len(core.outbox) for sid, core in streams.items()},
            "back": {str(port): {"owner": one.owner, "accepted": one.accepted, "refused": one.refused, "channels": len(one.channels)} for port, one in self.listeners.items()},
        }  # type: Dict[str, object]
        if owner:
            answer["owner_streams"] = len(self.table.of_owner(owner))
        return answer


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
    for listener in list(relay.listeners.values()):
        listener.close("the relay stopped")
    for core in list(relay.table.streams.values()):
        core.close("the relay stopped")
        core.io.pump()
    try:
        os.unlink(socket_path)
    except OSError:
        pass
    relay.log("stopped")


# --- the stdio transport's bridge (--mux): one per SSH connection that cannot forward ---------


class MuxTarget(asyncio.Protocol):
    """One virtual channel's far end: a connection to the relay's socket (or a server's)."""

    def __init__(self, bridge: MuxBridge, channel: int) -> None:
        self.bridge = bridge
        self.channel = channel
        self.transport = None  # type: Optional[asyncio.Transport]
        self.credit_paused = False  # no credit left for what it sends: not read
        self.verified = False  # opened (and a port's holder checked): until then nothing goes to the laptop
        self.early = []  # type: List[bytes]
        self.early_eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.set_write_buffer_limits(high=HIGH_WATER)  # type: ignore[attr-defined]
        transport.pause_reading()  # type: ignore[attr-defined]  # (held in data_received where 3.8-3.10 read anyway)

    def verify(self) -> None:
        """Opened (after its R): what it sent meanwhile goes to the laptop, then the rest."""
        self.verified = True
        early, self.early = self.early, []
        for data in early:
            self.bridge.from_target(self, data)
        if self.early_eof:
            self.bridge.send_eof(self.channel)
        if self.transport is not None and not self.credit_paused:
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if not self.verified:
            self.early.append(data)
            if self.transport is not None:
                self.transport.pause_reading()
            return
        self.bridge.from_target(self, data)

    def eof_received(self) -> bool:
        if not self.verified:
            self.early_eof = True
            return True
        self.bridge.send_eof(self.channel)
        return True

    def pause_writing(self) -> None:
        self.bridge.target_full.add(self.channel)

    def resume_writing(self) -> None:
        self.bridge.target_full.discard(self.channel)
        self.bridge.credit_back(self.channel)

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.transport = None
        self.bridge.target_gone(self.channel)


class MuxBridge:
    """The laptop's virtual channels, each to a Unix socket (the relay's) or 127.0.0.1:PORT
    (a server's, only once its socket is known to be this user's), over this process's stdin
    and stdout. It ends with its stdin: the SSH connection is gone, and so are its channels."""

    def __init__(self, loop: Any, out: asyncio.WriteTransport) -> None:
        self.loop = loop
        self.out = out
        self.mux = MuxEnd()
        self.targets = {}  # type: Dict[int, MuxTarget]
        self.held = {}  # type: Dict[int, int]  # bytes written to a target while it was full: credited once it drains
        self.target_full = set()  # type: set
        self.done = asyncio.Event()

    def flush(self) -> None:
        data = self.mux.take_out()
        if data and not self.out.is_closing():
            self.out.write(data)

    def from_laptop(self, data: bytes) -> None:
        try:
            events = self.mux.feed(data)
        except FrameError as error:
            log_line("mux: the laptop's frames are broken (%s); closing" % error)
            self.done.set()
            return
        for event in events:
            self._on_event(event)
        self.flush()

    def _on_event(self, event: Any) -> None:
        kind, channel = event[0], event[1]
        target = self.targets.get(channel)
        if kind == "open":
            asyncio.ensure_future(self._open(channel, event[2]))
        elif kind == "data" and target is not None and target.transport is not None:
            target.transport.write(event[2])
            if channel in self.target_full:
                self.held[channel] = self.held.get(channel, 0) + len(event[2])
            else:
                self.mux.took(channel, len(event[2]))
        elif kind == "eof" and target is not None and target.transport is not None and target.transport.can_write_eof():
            target.transport.write_eof()
        elif kind == "closed" and target is not None:
            self.targets.pop(channel, None)
            if target.transport is not None:
                target.transport.close()
        elif kind == "writable" and target is not None and target.transport is not None and target.credit_paused:
            target.credit_paused = False
            target.transport.resume_reading()

    async def _open(self, channel: int, where: Any) -> None:
        try:
            kind, address = parse_target(where)
            target = MuxTarget(self, channel)
            if kind == "unix":
                await asyncio.wait_for(self.loop.create_unix_connection(lambda: target, address), HELLO_DEADLINE)
            else:
                transport, _ = await asyncio.wait_for(self.loop.create_connection(lambda: target, "127.0.0.1", address), HELLO_DEADLINE)
                refused = await self._whose(transport, address)
                if refused is not None:
                    transport.abort()
                    raise OSError(refused)
        except (OSError, ValueError, asyncio.TimeoutError) as exc:
            self.mux.refuse(channel, getattr(exc, "strerror", None) or str(exc) or type(exc).__name__)
            self.flush()
            return
        if channel not in self.mux.channels:  # the laptop closed it meanwhile
            if target.transport is not None:
                target.transport.close()
            return
        self.targets[channel] = target
        self.mux.opened(channel)
        self.flush()
        target.verify()

    async def _whose(self, transport: asyncio.BaseTransport, port: int) -> Optional[str]:
        local = transport.get_extra_info("sockname")
        local_port = local[1] if isinstance(local, tuple) else None
        if local_port is None or local_port == port:
            return "nothing listens on 127.0.0.1:%d" % port
        uid = await far_uid(self.loop, transport, port, local_port)
        if uid == os.getuid():
            return None
        return "127.0.0.1:%d is held by %s, not by this user" % (port, account(uid) if uid is not None else "a socket that cannot be found")

    def from_target(self, target: MuxTarget, data: bytes) -> None:
        if not self.mux.send(target.channel, data) and target.transport is not None and not target.credit_paused:
            target.credit_paused = True  # the rest waits for credit: stop reading it meanwhile
            target.transport.pause_reading()
        self.flush()

    def send_eof(self, channel: int) -> None:
        self.mux.send_eof(channel)
        self.flush()

    def credit_back(self, channel: int) -> None:
        held = self.held.pop(channel, 0)
        if held:
            self.mux.took(channel, held, now=True)
            self.flush()

    def target_gone(self, channel: int) -> None:
        self.targets.pop(channel, None)
        self.held.pop(channel, None)
        self.target_full.discard(channel)
        self.mux.close(channel)
        self.flush()

    def pause_all(self) -> None:
        for target in self.targets.values():
            if target.transport is not None:
                target.transport.pause_reading()

    def resume_all(self) -> None:
        for target in self.targets.values():
            if target.transport is not None and not target.credit_paused:
                target.transport.resume_reading()


class _Stdin(asyncio.Protocol):
    def __init__(self, bridge: MuxBridge) -> None:
        self.bridge = bridge

    def data_received(self, data: bytes) -> None:
        self.bridge.from_laptop(data)

    def eof_received(self) -> bool:
        self.bridge.done.set()
        return False

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.bridge.done.set()


class _Stdout(asyncio.Protocol):
    def __init__(self) -> None:
        self.bridge = None  # type: Optional[MuxBridge]

    def pause_writing(self) -> None:
        if self.bridge is not None:
            self.bridge.pause_all()

    def resume_writing(self) -> None:
        if self.bridge is not None:
            self.bridge.resume_all()

    def connection_lost(self, exc: Optional[Exception]) -> None:
        if self.bridge is not None:
            self.bridge.done.set()


def log_line(message: str) -> None:
    print("%s mux: %s" % (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), message), file=sys.stderr, flush=True)


async def bridge_stdio() -> None:
    """Run the bridge on this process's stdin and stdout until stdin ends."""
    loop = asyncio.get_running_loop()
    stdout = _Stdout()
    out, _ = await loop.connect_write_pipe(lambda: stdout, os.fdopen(1, "wb", buffering=0, closefd=False))
    bridge = MuxBridge(loop, out)  # type: ignore[arg-type]
    stdout.bridge = bridge
    out.write(MUX_MAGIC)
    await loop.connect_read_pipe(lambda: _Stdin(bridge), os.fdopen(0, "rb", buffering=0, closefd=False))
    await bridge.done.wait()
    for target in list(bridge.targets.values()):
        if target.transport is not None:
            target.transport.close()


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="gt-remote relay (runs on the remote)")
    parser.add_argument("--socket")
    parser.add_argument("--port", type=int)
    parser.add_argument("--mux", action="store_true", help="bridge virtual channels over stdin and stdout (the stdio transport)")
    parser.add_argument("--budget", type=int, default=BUDGET, help="unacknowledged bytes across all streams")
    parser.add_argument("--leases", help="the directory of this port's leases (the lease op)")
    args = parser.parse_args(argv)
    if args.mux:
        asyncio.run(bridge_stdio())
        return 0
    if not args.socket or args.port is None:
        parser.error("--socket and --port are needed (or --mux)")
    asyncio.run(serve(args.socket, args.port, args.budget, args.leases))
    return 0


if __name__ == "__main__":
    sys.exit(main())
