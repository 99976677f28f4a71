"""The local listener: our own socket, so its address survives reconnects.

asyncssh's forward_local_port closes its listener when the connection is lost; gastown
would then see "connection refused" during every blip. Here each accepted client opens
one channel on whatever connection is current (to the server's own Unix socket when known,
else direct-tcpip to its port), and waits a bounded time for one during an outage.

Bytes move protocol to protocol (socket callbacks straight into channel writes and back),
with each side's flow control pausing the other: no stream buffers, no task per message.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import stat
from collections.abc import Awaitable, Callable
from typing import Any, cast

import asyncssh
from asyncssh.channel import SSHChannel

from gt_remote.base.addresses import Address, TcpAddress, UnixAddress
from gt_remote.base.errors import GtRemoteError, LocalPortInUse
from gt_remote.tunnel.link import Link
from gt_remote.tunnel.mux import BridgeFailed, MuxUnavailable, note_refused, opener, refused
from gt_remote.tunnel.resumable import RelayPath, ResumableClient

log = logging.getLogger(__name__)

CLIENT_WAIT = 15.0
EARLY_LIMIT = 1024 * 1024  # held per client while its channel opens


class Forwarder:
    def __init__(self, local: Address, remote_port: int, link: Link, client_wait: float = CLIENT_WAIT) -> None:
        self.local = local
        self.remote_port = remote_port
        self.link = link
        self.client_wait = client_wait
        self.clients: set[_ClientSide | ResumableClient] = set()
        self.relay: RelayPath | None = None  # set while the remote relay runs: new clients get resumable streams
        self.refusal: GtRemoteError | None = None  # set while the remote port is not the user's: nothing is forwarded
        self.server_socket: Callable[[], str | None] = lambda: None  # the server's own Unix socket, when known
        # An exec bridge to the server (gt_remote/remote/bridge.py), for an sshd that forwards nothing.
        self.bridge: Callable[[asyncssh.SSHClientConnection, Callable[[], Any], str | None, int], Awaitable[tuple[Any, Any]]] | None = None
        self._server: asyncio.AbstractServer | None = None
        self._socket_id: tuple[int, int] | None = None  # (device, inode) of the Unix socket we bound

    async def start(self) -> None:
        """Bind the local address; a taken address is an error, never a silent second port."""
        loop = asyncio.get_running_loop()
        try:
            if isinstance(self.local, TcpAddress):
                self._server = await loop.create_server(self._new_client, self.local.host, self.local.port, reuse_address=True)
            else:
                self._server = await self._start_unix(self.local)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise LocalPortInUse(
                    f"local address {self.local.url} is already in use",
                    "stop what holds it, or pick another with --local (e.g. tcp://127.0.0.1:19999)",
                ) from None
            raise GtRemoteError(f"cannot listen on {self.local.url}: {exc.strerror}", "pick another --local address") from None

    async def _start_unix(self, local: UnixAddress) -> asyncio.AbstractServer:
        _clear_stale_socket(local)
        os.makedirs(os.path.dirname(local.path), mode=0o700, exist_ok=True)
        old_umask = os.umask(0o177)
        try:
            server = await asyncio.get_running_loop().create_unix_server(self._new_client, local.path)
        finally:
            os.umask(old_umask)
        os.chmod(local.path, 0o600)
        self._socket_id = _file_id(local.path)
        return server

    def _new_client(self) -> asyncio.Protocol:
        if self.relay is not None and self.refusal is None:
            return ResumableClient(self.relay, self.clients)
        return _ClientSide(self)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            if isinstance(self.local, UnixAddress) and self._socket_id is not None and _file_id(self.local.path) == self._socket_id:
                os.unlink(self.local.path)  # still our socket: whatever replaced it since is not ours to remove
        channels = [client.channel for client in self.clients if isinstance(client, ResumableClient) and client.channel is not None]
        for client in list(self.clients):
            client.abort()  # a resumable stream tells the relay to close the server side
        if channels:  # let those close frames out before the connection goes
            await asyncio.wait([asyncio.ensure_future(channel.wait_closed()) for channel in channels], timeout=2.0)
        if self._server is not None:
            await self._server.wait_closed()

    async def open_channel(self, client: _ClientSide) -> SSHChannel[bytes]:
        """A channel to the server for one client, on the current connection: to the server's
        own Unix socket when known, where no other account can be listening, else to its port."""
        if self.refusal is not None:
            raise self.refusal
        conn = await self.link.wait_connected(self.client_wait)
        try:
            return await self._server_channel(conn, client)
        except asyncssh.ChannelOpenError as exc:
            raise GtRemoteError(f"the remote server refused the forwarded connection: {exc.reason}", "see `gt-remote status`") from None
        except (MuxUnavailable, BridgeFailed) as exc:  # the SSH connection is fine: the next client tries again
            raise GtRemoteError(f"no way to the remote server: {exc}", "see `gt-remote status`") from None
        except (asyncssh.Error, OSError) as exc:
            self.link.mark_lost(conn, str(exc))
            raise GtRemoteError(f"the SSH connection failed while forwarding: {exc}", "reconnecting") from None


    async def _server_channel(self, conn: asyncssh.SSHClientConnection, client: _ClientSide) -> SSHChannel[bytes]:
        socket_path = self.server_socket()
        session = cast("Callable[[], asyncssh.SSHUNIXSession[bytes]]", lambda: _ServerSide(client))  # it only moves bytes
        way = await opener(conn)
        if way is not conn:  # the stdio transport
            opened = await (way.create_unix_connection(session, socket_path) if socket_path else way.create_connection(session, "127.0.0.1", self.remote_port))
            return cast("SSHChannel[bytes]", opened[0])
        if socket_path is not None and refused(conn, "unix") is None:
            try:
                unix_channel, _ = await conn.create_unix_connection(session, socket_path)
                return cast("SSHChannel[bytes]", unix_channel)
            except asyncssh.ChannelOpenError as exc:
                if exc.code != asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED:
                    raise
                log.warning("%s; forwarding to 127.0.0.1:%d instead", note_refused(conn, "unix", exc), self.remote_port)
        if refused(conn, "tcp") is None or self.bridge is None:
            try:
                channel, _ = await conn.create_connection(lambda: _ServerSide(client), "127.0.0.1", self.remote_port)
                return channel
            except asyncssh.ChannelOpenError as exc:
                if exc.code != asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED or self.bridge is None:
                    raise
                log.warning("%s; forwarding through exec bridges", note_refused(conn, "tcp", exc))
        bridged, _ = await self.bridge(conn, session, socket_path, self.remote_port)
        return cast("SSHChannel[bytes]", bridged)


class _ClientSide(asyncio.Protocol):
    """A local client's socket. What it sends before its channel opens is held, bounded."""

    def __init__(self, forwarder: Forwarder) -> None:
        self.forwarder = forwarder
        self.transport: asyncio.Transport | None = None
        self.channel: SSHChannel[bytes] | None = None
        self._opening: asyncio.Task[None] | None = None
        self._early: list[bytes] = []  # what the client sent before its channel opened
        self._early_size = 0
        self._early_eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.forwarder.clients.add(self)
        self._opening = asyncio.ensure_future(self._connect())

    async def _connect(self) -> None:
        try:
            channel = await self.forwarder.open_channel(self)
        except GtRemoteError as error:
            log.info("closing a local client: %s", error)
            if self.transport is not None:
                self.transport.close()  # a clean FIN, not a reset: the client may be reading
            return
        assert self.transport is not None
        if self.transport.is_closing():
            channel.close()
            return
        self.channel = channel
        for data in self._early:
            channel.write(data)
        self._early.clear()
        if self._early_eof:
            channel.write_eof()
        if self._early_size > EARLY_LIMIT:
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.channel is not None:
            self.channel.write(data)
            return
        # Read, not left in the kernel: closing over unread data would send a reset.
        self._early.append(data)
        self._early_size += len(data)
        if self._early_size > EARLY_LIMIT:
            assert self.transport is not None
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        if self.channel is None:
            self._early_eof = True
        else:
            self.channel.write_eof()
        return True  # half-close: the client may still read the replies

    def pause_writing(self) -> None:
        if self.channel is not None:
            self.channel.pause_reading()

    def resume_writing(self) -> None:
        if self.channel is not None:
            self.channel.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.forwarder.clients.discard(self)
        if self._opening is not None and not self._opening.done():
            self._opening.cancel()
        if self.channel is not None:
            self.channel.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


class _ServerSide(asyncssh.SSHTCPSession[bytes]):
    """The channel's end: what the server sends goes straight to the client's socket."""

    def __init__(self, client: _ClientSide) -> None:
        self.client = client

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        assert self.client.transport is not None
        self.client.transport.write(data)

    def eof_received(self) -> bool:
        self._close_client()
        return False  # the server ended the session: end the client's too

    def pause_writing(self) -> None:
        if self.client.transport is not None:
            self.client.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.client.transport is not None and self.client.channel is not None:
            self.client.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._close_client()

    def _close_client(self) -> None:
        if self.client.transport is not None:
            self.client.transport.close()  # flushes what is buffered first


def _clear_stale_socket(local: UnixAddress) -> None:
    """Make room for our socket at `local.path`: only a socket that nothing answers on is
    removed (a dead supervisor's). The path is looked at with lstat, so a symlink is never
    followed, and anything but a socket (a user's file, a symlink, a directory) is refused
    and left exactly as it was: --local may name a path by mistake, and an unlink cannot be undone."""
    try:
        found = os.lstat(local.path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(found.st_mode):
        raise LocalPortInUse(
            f"local address {local.url} is taken by {_kind_of(found.st_mode)}, not a socket (gt-remote replaces only a dead socket there)",
            f"move {local.path} away yourself if it is not needed, or pick another --local path",
        )
    if _unix_socket_answers(local.path):
        raise OSError(errno.EADDRINUSE, "in use")
    os.unlink(local.path)  # a socket nothing answers on: a dead process's


def _kind_of(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISREG(mode):
        return "a regular file"
    return "a special file"


def _file_id(path: str) -> tuple[int, int] | None:
    """The (device, inode) of the socket at `path`, not following a symlink; None for anything else."""
    try:
        found = os.lstat(path)
    except OSError:
        return None
    return (found.st_dev, found.st_ino) if stat.S_ISSOCK(found.st_mode) else None


def _unix_socket_answers(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()
