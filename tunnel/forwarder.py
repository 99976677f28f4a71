"""The local listener: our own socket, so its address survives reconnects.

asyncssh's forward_local_port closes its listener when the connection is lost; gastown
would then see "connection refused" during every blip. Here each accepted client opens
one direct-tcpip channel on whatever connection is current, and waits a bounded time
for one during an outage.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket

import asyncssh

from gt_remote.addresses import Address, TcpAddress, UnixAddress
from gt_remote.errors import GtRemoteError, LocalPortInUse
from tunnel.link import Link

log = logging.getLogger(__name__)

READ_SIZE = 256 * 1024
CLIENT_WAIT = 15.0


class Forwarder:
    def __init__(self, local: Address, remote_port: int, link: Link, client_wait: float = CLIENT_WAIT) -> None:
        self.local = local
        self.remote_port = remote_port
        self.link = link
        self.client_wait = client_wait
        self.clients: set[asyncio.Task[None]] = set()
        self.served = 0
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        """Bind the local address; a taken address is an error, never a silent second port."""
        try:
            if isinstance(self.local, TcpAddress):
                self._server = await asyncio.start_server(self._accept, self.local.host, self.local.port, reuse_address=True)
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
        if os.path.exists(local.path):
            if _unix_socket_answers(local.path):
                raise OSError(errno.EADDRINUSE, "in use")
            os.unlink(local.path)  # stale socket of a dead process
        directory = os.path.dirname(local.path)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        old_umask = os.umask(0o177)
        try:
            server = await asyncio.start_unix_server(self._accept, local.path)
        finally:
            os.umask(old_umask)
        os.chmod(local.path, 0o600)
        return server

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            if isinstance(self.local, UnixAddress):
                try:
                    os.unlink(self.local.path)
                except FileNotFoundError:
                    pass
        for task in list(self.clients):
            task.cancel()
        await asyncio.gather(*self.clients, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One task per client, tracked so `close` can end them and tests can count them."""
        task = asyncio.current_task()
        assert task is not None
        self.clients.add(task)
        try:
            await self._serve(reader, writer)
        finally:
            self.clients.discard(task)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.served += 1
        try:
            conn = await self.link.wait_connected(self.client_wait)
            remote_reader, remote_writer = await self._open_channel(conn)
        except GtRemoteError as error:
            log.info("closing a local client: %s", error)
            writer.close()
            return
        await _splice(reader, writer, remote_reader, remote_writer)

    async def _open_channel(self, conn: asyncssh.SSHClientConnection) -> tuple[asyncssh.SSHReader, asyncssh.SSHWriter]:
        try:
            return await conn.open_connection("127.0.0.1", self.remote_port)
        except asyncssh.ChannelOpenError as exc:
            raise GtRemoteError(f"the remote server refused the forwarded connection: {exc.reason}", "see `gt-remote status`") from None
        except (asyncssh.Error, OSError) as exc:
            self.link.mark_lost(conn, str(exc))
            raise GtRemoteError(f"the SSH connection failed while forwarding: {exc}", "reconnecting") from None


def _unix_socket_answers(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()


async def _pump(reader: asyncio.StreamReader | asyncssh.SSHReader, writer: asyncio.StreamWriter | asyncssh.SSHWriter) -> None:
    """Copy until EOF and pass the EOF on; on an error, close the far side so it ends too."""
    try:
        while data := await reader.read(READ_SIZE):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError, asyncssh.Error):
        writer.close()


async def _splice(local_reader, local_writer, remote_reader, remote_writer) -> None:  # type: ignore[no-untyped-def]
    """Copy both ways. The client may half-close and still read replies; the session
    ends when the server side ends (or fails), and then both sides are closed."""
    upstream = asyncio.create_task(_pump(local_reader, remote_writer))
    try:
        await _pump(remote_reader, local_writer)
    finally:
        upstream.cancel()
        await asyncio.gather(upstream, return_exceptions=True)
        remote_writer.close()
        local_writer.close()
