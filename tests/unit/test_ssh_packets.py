"""Which ciphers keep asyncssh's empty SSH_MSG_IGNORE packets (only CBC needs them) and which
cipher goes first (AES-GCM with AES in hardware and no `Ciphers` in ssh_config): the choices
alone, without a connection. tests/e2e/test_ssh_packets.py counts the packets against a real
sshd (gt_remote/tunnel/ciphers.py)."""

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

