"""What a small message costs on gt-remote's SSH connection: one packet, not two, on AES-GCM.

asyncssh sends an empty SSH_MSG_IGNORE before every packet, a countermeasure only CBC
ciphers need. gt-remote's connections leave it out with any other cipher (every message of
an interactive pane then costs one packet to encrypt, send, read and decrypt instead of two)
and keep it with CBC. Checked against a real sshd, from asyncssh's own log of what it sent.
With AES in hardware and no `Ciphers` in ssh_config, the connection prefers AES-GCM, which
costs asyncssh less per packet than chacha20-poly1305 (gt_remote/tunnel/ciphers.py)."""

from __future__ import annotations

import pytest

from gt_remote.tunnel.ciphers import aes_in_hardware, preferred_ciphers
from gt_remote.tunnel.connection import chaff_protects

# --- which cipher -------------------------------------------------------------------------

DEFAULTS = [b"chacha20-poly1305@openssh.com", b"aes256-gcm@openssh.com", b"aes128-gcm@openssh.com", b"aes256-ctr"]


@pytest.mark.parametrize(("cipher", "protects"), [
    ("chacha20-poly1305@openssh.com", False), ("aes128-gcm@openssh.com", False), ("aes256-ctr", False),
    ("aes128-cbc", True), ("aes256-cbc", True), ("rijndael-cbc@lysator.liu.se", True),
])
def test_only_cbc_needs_the_ignore_packets(cipher: str, protects: bool) -> None:
    assert chaff_protects(cipher) is protects


def test_aes_gcm_goes_first_with_aes_in_hardware() -> None:
    assert preferred_ciphers(DEFAULTS, None, True) == ["aes256-gcm@openssh.com", "aes128-gcm@openssh.com",
                                                       "chacha20-poly1305@openssh.com", "aes256-ctr"]


@pytest.mark.parametrize(("configured", "hardware"), [("chacha20-poly1305@openssh.com", True), ("+aes128-cbc", True), (None, False)])
def test_ssh_config_or_a_cpu_without_aes_keeps_asyncssh_order(configured: str | None, hardware: bool) -> None:
    assert preferred_ciphers(DEFAULTS, configured, hardware) is None


def test_this_machine_reports_aes_instructions_as_its_cpuinfo_does() -> None:
    with open("/proc/cpuinfo") as cpuinfo:
        flags = next(line for line in cpuinfo if line.startswith(("flags", "Features")))
    assert aes_in_hardware() is ("aes" in flags.split(":", 1)[1].split())

