"""A key that needs its passphrase (#30.7): asyncssh leaves an encrypted identity file out
without a word, so gt-remote finds such keys itself when the server refuses, and says what to
run. Real keys made by ssh-keygen; the whole path against a real sshd and agent is in
tests/e2e/test_up_errors.py."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import asyncssh
import pytest

from gt_remote.tunnel.connection import _encrypted, _public_blob, locked_keys, needs_passphrase
from tests.testbed import wait_for


def keygen(path: Path, passphrase: str) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", "test", "-f", str(path)], check=True, timeout=30)
    return path


def test_an_encrypted_key_is_told_from_a_plain_one_and_its_public_half_read_without_the_passphrase(tmp_path: Path) -> None:
    locked, plain = keygen(tmp_path / "locked", "secret"), keygen(tmp_path / "plain", "")
    assert _encrypted(str(locked)) and not _encrypted(str(plain)) and not _encrypted(str(tmp_path / "absent"))
    public = asyncssh.read_public_key(f"{locked}.pub").public_data
    assert _public_blob(str(locked)) == public
    Path(f"{locked}.pub").unlink()
    assert _public_blob(str(locked)) == public  # from the private file's own unencrypted header


def test_the_identity_files_in_use_that_are_locked_and_in_no_agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    locked, plain = keygen(tmp_path / "locked", "secret"), keygen(tmp_path / "plain", "")
    config = tmp_path / "ssh_config"
    config.write_text(f"Host pc\n    HostName 127.0.0.1\n    IdentityFile {locked}\n    IdentityFile {plain}\n    IdentityAgent {tmp_path / 'no-agent.sock'}\n")
    options = asyncssh.SSHClientConnectionOptions(host="pc", config=[str(config)])
    assert asyncio.run(locked_keys(options)) == [str(locked)]
    (tmp_path / "home" / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    default = keygen(tmp_path / "home" / ".ssh" / "id_ed25519", "secret")
    config.write_text(f"Host pc\n    HostName 127.0.0.1\n    IdentityAgent {tmp_path / 'no-agent.sock'}\n")  # no IdentityFile: the default names
    options = asyncssh.SSHClientConnectionOptions(host="pc", config=[str(config)])
    assert asyncio.run(locked_keys(options)) == [str(default)]


def test_the_message_names_the_key_under_the_home_and_the_command_to_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/you")
    one = needs_passphrase("gaming-pc", ["/home/you/.ssh/id_ed25519"])
    assert str(one) == (
        "gaming-pc refused authentication: the key ~/.ssh/id_ed25519 needs its passphrase, and gt-remote runs unattended and never prompts; "
        "add it to your agent with 'ssh-add ~/.ssh/id_ed25519' (and make sure SSH_AUTH_SOCK reaches gt-remote)"
    )
    two = str(needs_passphrase("gaming-pc", ["/home/you/.ssh/my key", "/keys/work"]))
    assert "the keys ~/.ssh/my key and /keys/work need their passphrases" in two and "'ssh-add ~/'.ssh/my key' /keys/work'" in two


def test_a_locked_key_an_agent_holds_is_not_blamed(tmp_path: Path) -> None:
    """Refused although the agent offered the key: then the key is not authorised there, and
    the usual refusal (authorized_keys) is the right message."""
    locked = keygen(tmp_path / "locked", "secret")
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(sock.is_socket, 10, "the agent's socket")
        askpass = tmp_path / "askpass"
        askpass.write_text("#!/bin/sh\necho secret\n")
        askpass.chmod(0o700)
        env = {"PATH": "/usr/bin:/bin", "SSH_AUTH_SOCK": str(sock), "SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force", "DISPLAY": ":0"}
        subprocess.run(["ssh-add", str(locked)], env=env, check=True, capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
        config = tmp_path / "ssh_config"
        config.write_text(f"Host pc\n    HostName 127.0.0.1\n    IdentityFile {locked}\n    IdentityAgent {sock}\n")
        assert asyncio.run(locked_keys(asyncssh.SSHClientConnectionOptions(host="pc", config=[str(config)]))) == []
    finally:
        agent.kill()  # the agent this test started, by its pid
        agent.wait(10)
