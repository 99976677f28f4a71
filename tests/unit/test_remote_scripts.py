"""Remote helper scripts run under a local POSIX sh (dash here, as on Debian's remotes): the
parts of their logic that do not need a remote, with real processes and files."""

from __future__ import annotations

import subprocess
from pathlib import Path

from gt_remote.remote import scripts as remote
from gt_remote.remote.relay import deploy as remote_relay
from gt_remote.remote.scripts import script_text


def run(script: str, install_dir: Path, *args: str) -> dict[str, str]:
    text = script_text(script, args, str(install_dir), token="t0ken")
    result = subprocess.run(["sh", "-s"], input=text.encode(), capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return remote._result(result.returncode, result.stdout, result.stderr, "t0ken").fields  # read as run_script reads it


def uploaded_agent(install_dir: Path) -> Path:
    agent = install_dir / "gt-remote" / "relay" / remote_relay.remote_agent_path()
    agent.parent.mkdir(parents=True)
    agent.write_text("# the relay\n")
    return agent


def test_an_upload_a_relay_runs_is_kept_even_when_its_path_reads_as_a_pattern(tmp_path: Path) -> None:
    install_dir = tmp_path / "games (c++)"  # pgrep -f would read "(" and "++" as a regular expression
    agent = uploaded_agent(install_dir)
    relay = subprocess.Popen(["sh", "-c", "sleep 60", str(agent), "--socket", str(tmp_path / "sock")])  # its command line names the agent
    try:
        assert run(remote_relay.REMOVE_UPLOAD_SCRIPT, install_dir, remote_relay.remote_agent_path()) == {"removed": "0"}
        assert agent.exists()
    finally:
        relay.kill()  # our own child, by pid
        relay.wait(10)
    assert run(remote_relay.REMOVE_UPLOAD_SCRIPT, install_dir, remote_relay.remote_agent_path()) == {"removed": "1"}
    assert not agent.exists() and not agent.parent.exists()


def build_with_a_noisy_loader(install_dir: Path) -> Path:
    build = install_dir / "gt-remote" / "servers" / ("ab" * 8) / "ccmux-server"
    build.parent.mkdir(parents=True)
    build.write_text("#!/bin/sh\necho 'ld.so: warning: ignoring LD_PRELOAD' >&2\necho 'ccmux-server 0.1.1'\n")
    build.chmod(0o755)
    return build


def test_the_kept_version_is_the_answer_on_stdout_not_a_warning_on_stderr(tmp_path: Path) -> None:
    build = build_with_a_noisy_loader(tmp_path)
    script = 'echo "version=$(version_of "$1")"'
    assert run(script, tmp_path, str(build)) == {"version": "ccmux-server 0.1.1"}
    assert Path(f"{build}.version").read_text() == "ccmux-server 0.1.1\n"


def test_an_empty_kept_version_is_asked_again(tmp_path: Path) -> None:
    build = build_with_a_noisy_loader(tmp_path)
    Path(f"{build}.version").write_text("")
    assert run('echo "version=$(version_of "$1")"', tmp_path, str(build)) == {"version": "ccmux-server 0.1.1"}


def test_the_supervisors_digest_is_the_one_the_remote_checks(tmp_path: Path) -> None:
    """The supervisor hashes a build on cryptography's OpenSSL (its process has no hashlib
    OpenSSL): the same SHA-256 as sha256sum, which the upload's check runs on the remote, and as
    hashlib's, which the light commands use. The file spans several read blocks and ends mid-block."""
    import os

    from gt_remote.base import builds
    from gt_remote.remote import digest

    build = tmp_path / "ccmux-server"
    build.write_bytes(os.urandom(3 * (1 << 20) + 12345))
    remote_answer = subprocess.run(["sha256sum", str(build)], capture_output=True, text=True, check=True).stdout.split()[0]
    assert digest.file_sha256(str(build)) == remote_answer == builds.file_sha256(str(build))
    assert digest.file_digest(str(build)) == remote_answer[:16]
