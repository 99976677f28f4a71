"""What a small message costs on gt-remote's SSH connection: one packet, not two, on AES-GCM.

asyncssh sends an empty SSH_MSG_IGNORE before every packet, a countermeasure only CBC
ciphers need. gt-remote's connections leave it out with any other cipher (every message of
an interactive pane then costs one packet to encrypt, send, read and decrypt instead of two)
and keep it with CBC. Checked against a real sshd, from asyncssh's own log of what it sent.
With AES in hardware and no `Ciphers` in ssh_config, the connection prefers AES-GCM, which
costs asyncssh less per packet than chacha20-poly1305 (gt_remote/tunnel/ciphers.py)."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter

import asyncssh

from gt_remote.base.errors import ConnectFailed, NoCommonAlgorithm
from gt_remote.tunnel.ciphers import aes_in_hardware
from gt_remote.tunnel.connection import SshTarget, chaff_protects, connect
from tests.testbed import SshHost, wait_for

MESSAGES = 20


class SentPackets(logging.Handler):
    """Counts the packets asyncssh logs as sent (its debug level 3 logs each one)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.sent: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        words = record.getMessage().split()
        if "Sent" in words:
            self.sent[words[words.index("Sent") + 1]] += 1


async def _echo_through_cat(target: SshTarget) -> tuple[Counter[str], str]:
    """Send MESSAGES lines one by one through `cat` on the remote, each after the last came back."""
    conn = await connect(target)
    try:
        process = await conn.create_process("exec cat", encoding=None)
        counter = SentPackets()
        asyncssh_log = logging.getLogger("asyncssh")
        old_level = asyncssh_log.level
        asyncssh_log.addHandler(counter)
        asyncssh_log.setLevel(logging.DEBUG)
        asyncssh.set_debug_level(3)
        try:
            for index in range(MESSAGES):
                process.stdin.write(b"line %d\n" % index)
                assert await asyncio.wait_for(process.stdout.readline(), 30) == b"line %d\n" % index
        finally:
            asyncssh.set_debug_level(1)
            asyncssh_log.setLevel(old_level)
            asyncssh_log.removeHandler(counter)
        process.close()
        return counter.sent, conn.get_extra_info("send_cipher")
    finally:
        conn.close()
        await conn.wait_closed()


async def _cipher_of(target: SshTarget) -> str:
    conn = await connect(target)
    try:
        return str(conn.get_extra_info("send_cipher"))
    finally:
        conn.close()
        await conn.wait_closed()


def test_a_message_is_one_packet(ssh_host: SshHost) -> None:
    sent, cipher = asyncio.run(_echo_through_cat(SshTarget("gaming-pc", ssh_config=str(ssh_host.ssh_config))))
    assert not chaff_protects(cipher)
    assert sent["MSG_CHANNEL_DATA"] == MESSAGES
    assert sent["MSG_IGNORE"] == 0, sent


def test_cbc_keeps_its_ignore_packets(ssh_host: SshHost) -> None:
    """A user whose ssh_config picks a CBC cipher keeps asyncssh's countermeasure."""
    ssh_host.sh("echo 'Ciphers +aes128-cbc' >> /etc/ssh/sshd_config && kill -HUP 1")
    ssh_host.extra_config.append("Ciphers aes128-cbc")
    ssh_host.write_ssh_config()
    target = SshTarget("gaming-pc", ssh_config=str(ssh_host.ssh_config))
    results: list[tuple[Counter[str], str]] = []

    def echoed_over_cbc() -> bool:  # sshd takes the new configuration when its re-exec is done
        try:
            results.append(asyncio.run(_echo_through_cat(target)))
        except (NoCommonAlgorithm, ConnectFailed):  # not yet: the old sshd offers no CBC, or it is restarting
            return False
        return True

    wait_for(echoed_over_cbc, 30, "sshd to offer aes128-cbc")
    sent, cipher = results[-1]
    assert cipher == "aes128-cbc"
    assert sent["MSG_CHANNEL_DATA"] == MESSAGES
    assert sent["MSG_IGNORE"] >= MESSAGES, sent


def test_the_connection_uses_aes_gcm_unless_ssh_config_says(ssh_host: SshHost) -> None:
    """The default, against a real sshd; then a `Ciphers` line in ssh_config, which wins."""
    target = SshTarget("gaming-pc", ssh_config=str(ssh_host.ssh_config))
    expected = "aes256-gcm@openssh.com" if aes_in_hardware() else "chacha20-poly1305@openssh.com"
    assert asyncio.run(_cipher_of(target)) == expected
    ssh_host.extra_config.append("Ciphers chacha20-poly1305@openssh.com,aes256-gcm@openssh.com")
    ssh_host.write_ssh_config()
    assert asyncio.run(_cipher_of(target)) == "chacha20-poly1305@openssh.com"

