"""#27.5: a supervisor's settings are not shown to other local accounts.

Every account can read any process's /proc/PID/cmdline (and `ps` prints it), so the detached
supervisor's command line names its host and nothing more; `up` hands it the settings (the
ssh destination, the ssh_config and build paths, an install_command that may hold a token)
through a pipe on its stdin, which leaves no file behind for a later supervisor to pick up.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from gt_remote.base.config import HostSettings
from gt_remote.runtime.control import _supervises
from tests.helpers import supervisor_processes
from tests.testbed import REPO, STANDIN, Gt, SshHost, free_loopback_port

SECRET = "ghp_Zq8sEcReTtOkEn0123456789abcdefXYZ"  # what a token in an install_command looks like


def private_setup(gt: Gt, ssh_host: SshHost) -> dict[str, Path | str]:
    """A host `pc` reached as user@alias, through an ssh_config (naming an identity) at a path
    of the user's choosing, whose install_command carries a token."""
    ssh_dir = gt.home / "work-secrets"
    ssh_dir.mkdir(mode=0o700)
    ssh_config = ssh_dir / "client_ssh_config"
    shutil.copy(ssh_host.ssh_config, ssh_config)
    destination = f"{ssh_host.user}@{ssh_host.alias}"
    config = gt.home / "gt-remote-private.toml"
    config.write_text(
        "[hosts.pc]\n"
        f'ssh = "{destination}"\n'
        f'local = "tcp://127.0.0.1:{free_loopback_port()}"\n'
        f'server_binary = "{STANDIN}"\n'
        f'install_command = "curl -H \'Authorization: token {SECRET}\' https://example.invalid/ccmux | sh"\n'
    )
    return {"ssh_config": ssh_config, "config": config, "destination": destination, "identity": ssh_host.key.path}


def test_the_supervisors_command_line_names_only_the_program_and_host(gt: Gt, ssh_host: SshHost) -> None:
    setup = private_setup(gt, ssh_host)
    result = gt("--config", str(setup["config"]), "up", "pc", ssh_config=Path(setup["ssh_config"]))
    assert result.returncode == 0, result.stderr
    [pid] = supervisor_processes(gt.env["XDG_RUNTIME_DIR"])  # our own child: its cmdline is as others see it
    args = [arg.decode() for arg in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if arg]
    shown = " ".join(args)
    for private in (SECRET, "Authorization", setup["destination"], ssh_host.alias, setup["ssh_config"], setup["identity"], STANDIN, setup["config"]):
        assert str(private) not in shown, f"{private} is on the supervisor's command line: {shown}"
    assert args == [sys.executable, "-m", "gt_remote.runtime.supervisor", "pc"]
    [row] = gt.status("pc")  # and the settings did reach it, whole
    assert row["state"] == "up" and row["supervisor_pid"] == pid
    assert row["settings"]["destination"] == setup["destination"] and SECRET in row["settings"]["install_command"]
    assert row["settings"]["ssh_config"] == str(Path(setup["ssh_config"]).resolve())


def test_no_settings_file_is_left_for_a_later_supervisor(gt: Gt, ssh_host: SshHost) -> None:
    """The hand-over is a pipe: neither the runtime dir nor the state dir keeps a file with the
    token but the 0600 record and remote files, in 0700 directories, that `status` and `clean` read."""
    setup = private_setup(gt, ssh_host)
    assert gt("--config", str(setup["config"]), "up", "pc", ssh_config=Path(setup["ssh_config"])).returncode == 0
    holding = [path for root in (Path(gt.env["XDG_RUNTIME_DIR"]), gt.home / ".local/state") for path in root.rglob("*") if path.is_file() and SECRET.encode() in path.read_bytes()]
    assert sorted(path.parent.name for path in holding) == ["hosts", "remotes"], holding
    for path in holding:
        assert path.stat().st_mode & 0o777 == 0o600 and path.parent.stat().st_mode & 0o777 == 0o700, path


def run_supervisor(name: str, stdin: bytes, tmp_path: Path) -> tuple[int, list[dict[str, object]]]:
    env = {"HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "state"), "XDG_RUNTIME_DIR": str(tmp_path / "run"), "PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "gt_remote.runtime.supervisor", name], input=stdin, capture_output=True, env=env, timeout=60)
    return proc.returncode, [json.loads(line) for line in proc.stdout.splitlines()]


def test_a_cut_short_or_foreign_hand_over_is_refused(tmp_path: Path) -> None:
    """`up` killed mid-write, or settings for another host than the command line names (which
    `down` and `status` go by): an error event for `up`, never a supervisor for the wrong host."""
    whole = HostSettings(name="other", destination="gamer@elsewhere", local_url="tcp://127.0.0.1:1").to_json().encode()
    for stdin in (whole[: len(whole) // 2], b"", whole):
        code, events = run_supervisor("pc", stdin, tmp_path)
        assert code == 1 and [event["event"] for event in events] == ["error"], events
        assert "no usable settings" in str(events[0]["error"])
    assert not (tmp_path / "run" / "gt-remote" / "other.pid").exists()


def test_down_and_status_know_a_supervisor_by_its_host_name() -> None:
    """control._supervises reads /proc/PID/cmdline; one started before this change carries its settings there."""
    python = [sys.executable, "-m", "gt_remote.runtime.supervisor"]
    assert _supervises([*python, "pc"], "pc")
    assert not _supervises([*python, "pc"], "other")
    assert _supervises([*python, HostSettings(name="pc", destination="gamer@pc").to_json()], "pc")
    assert not _supervises([*python, "{not json"], "pc")


def test_the_login_unit_holds_no_setting_of_the_config(gt: Gt, ssh_host: SshHost) -> None:
    """`up HOST --foreground` reads the destination and install_command from the config at each
    start, so the unit (0600) names only the host and the files it was installed with."""
    setup = private_setup(gt, ssh_host)
    install = gt("--config", str(setup["config"]), "service", "install", "pc", "--platform", "systemd", "--no-start", ssh_config=Path(setup["ssh_config"]))
    assert install.returncode == 0, install.stderr
    unit = gt.home / ".config/systemd/user/gt-remote-pc.service"
    text = unit.read_text()
    assert SECRET not in text and str(setup["destination"]) not in text and str(STANDIN) not in text and str(setup["identity"]) not in text
    assert unit.stat().st_mode & 0o777 == 0o600
