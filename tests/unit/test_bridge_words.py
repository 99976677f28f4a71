"""What an exec bridge's failure says (gt_remote/remote/bridge.py): one line naming the SSH
server and what it refuses, what the remote lacks, and advice that fits that server."""

from __future__ import annotations

import asyncssh

from gt_remote.remote.bridge import no_way_to_server
from gt_remote.tunnel import mux


class Conn:
    """An SSH connection as far as the words need one: its server's version string."""

    def __init__(self, version: str) -> None:
        self.version = version

    def get_extra_info(self, name: str) -> str | None:
        return self.version if name == "server_version" else None


def test_openssh_that_forwards_nothing_is_named_with_its_setting() -> None:
    conn = Conn("SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3")
    mux.note_refused(conn, "tcp", asyncssh.ChannelOpenError(asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, "open failed"))  # type: ignore[arg-type]
    error = no_way_to_server(conn, mux.BridgeFailed("none of python3, socat, nc or bash is there to reach 9999"), 9999)  # type: ignore[arg-type]
    assert error.cause == "no way to the server on 127.0.0.1:9999: OpenSSH_9.2p1 Debian-2+deb12u3 refuses TCP forwarding (open failed, code 1); none of python3, socat, nc or bash is there to reach 9999"
    assert "AllowTcpForwarding yes" in error.fix and "DisableForwarding" in error.fix and "\n" not in str(error)


def test_dropbear_gets_advice_it_can_take() -> None:
    conn = Conn("SSH-2.0-dropbear_2022.83")
    error = no_way_to_server(conn, mux.BridgeFailed("none of python3, socat, nc or bash is there to reach 9999"), 9999)  # type: ignore[arg-type]
    assert error.cause.startswith("no way to the server on 127.0.0.1:9999: dropbear_2022.83 forwards nothing")
    assert "dropbear without -j" in error.fix and "sshd_config" not in error.fix
    assert mux.refused(conn, "unix") == "dropbear_2022.83 has no stream-local forwarding (channels to Unix sockets)"  # type: ignore[arg-type]
