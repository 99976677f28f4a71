"""doctor, sync and service: the helpers around the tunnel."""

from __future__ import annotations

import json
import plistlib
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Gt
from tests.testbed import SshHost

# --- doctor -----------------------------------------------------------------------------


def checks(result: subprocess.CompletedProcess[str]) -> dict[str, dict[str, str]]:
    return {check["name"]: check for check in json.loads(result.stdout)}


def test_doctor_all_green_when_up(gt: Gt, ssh_host: SshHost) -> None:
    assert gt.up(ssh_host).returncode == 0
    gt.env["GASTOWN_CCMUX_ADDR"] = "tcp://127.0.0.1:9999"
    result = gt("doctor", "gaming-pc", "--json", ssh_config=ssh_host.ssh_config)
    assert result.returncode == 0, result.stdout
    found = checks(result)
    assert found["GASTOWN_CCMUX_ADDR parses"]["status"] == "ok"
    assert found["gaming-pc resolves through ssh_config"]["status"] == "ok"
    assert found["SSH connection and authentication"]["detail"] == "logged in as gamer"
    assert "version 0.1.1" in found["ccmux-server on the remote"]["detail"]
    assert found["tunnel is up"]["status"] == "ok"
    assert found["ccmux Ping answered"]["status"] == "ok"
    assert {found[name]["status"] for name in ("ccmux on PATH", "ccmux-compat on PATH", "gt on PATH")} <= {"ok", "warn"}
    human = gt("doctor", "gaming-pc", ssh_config=ssh_host.ssh_config)
    assert "✓ tunnel is up" in human.stdout


def test_doctor_warns_that_other_accounts_can_reach_the_servers_port(gt: Gt, ssh_host: SshHost) -> None:
    """The test host has login accounts besides gamer (docker/shells.sh): doctor names them
    and the fix; a service account without a login shell is not one of them."""
    ssh_host.sh("useradd --system --shell /usr/sbin/nologin svc-daemon")
    found = checks(gt("doctor", "gaming-pc", "--json", ssh_config=ssh_host.ssh_config))
    check = found["no other account can reach the server's TCP port"]
    assert check["status"] == "warn", check
    assert "bashy" in check["detail"] and "svc-daemon" not in check["detail"] and "127.0.0.1:9999" in check["detail"], check
    assert "--uid-owner" in check["fix"]


def test_doctor_names_each_failure_with_a_fix(gt: Gt, ssh_host: SshHost) -> None:
    gt.env["GASTOWN_CCMUX_ADDR"] = "tcp://127.0.0.1"
    result = gt("doctor", "gaming-pc", "--json", ssh_config=ssh_host.ssh_config)
    assert result.returncode == 1
    found = checks(result)
    assert found["GASTOWN_CCMUX_ADDR parses"]["status"] == "fail" and "missing port" in found["GASTOWN_CCMUX_ADDR parses"]["detail"]
    assert found["ccmux-server on the remote"]["status"] == "fail" and "--server-binary" in found["ccmux-server on the remote"]["fix"]
    assert found["tunnel is up"]["status"] == "fail" and "gt-remote up gaming-pc" in found["tunnel is up"]["fix"]
    assert found["ccmux Ping answered"]["status"] == "fail"
    ssh_host.sh(": > /home/gamer/.ssh/authorized_keys")
    refused = checks(gt("doctor", "gaming-pc", "--json", ssh_config=ssh_host.ssh_config))
    assert refused["SSH connection and authentication"]["status"] == "fail"
    unknown = checks(gt("doctor", "nowhere.invalid", "--json", ssh_config=ssh_host.ssh_config))
    assert unknown["nowhere.invalid resolves through ssh_config"]["status"] == "fail"


# --- sync -------------------------------------------------------------------------------


def make_rig(root: Path) -> Path:
    rig = root / "gt" / "rig1"
    (rig / ".beads").mkdir(parents=True)
    (rig / ".beads" / "ledger.jsonl").write_text('{"id": "bd-1", "status": "open"}\n')
    (rig / "src.py").write_text("print('polecat')\n")
    return rig


def test_sync_push_pull_round_trip_and_dry_run(gt: Gt, ssh_host: SshHost) -> None:
    rig = make_rig(gt.home)
    pushed = gt("sync", "gaming-pc", "--push", str(rig), ssh_config=ssh_host.ssh_config)
    assert pushed.returncode == 0, pushed.stderr
    assert ssh_host.sh("cat /home/gamer/gt/rig1/.beads/ledger.jsonl", user="gamer") == '{"id": "bd-1", "status": "open"}\n'

    ssh_host.sh("echo '{\"id\": \"bd-2\"}' >> /home/gamer/gt/rig1/.beads/ledger.jsonl && echo new > /home/gamer/gt/rig1/remote.txt", user="gamer")
    dry = gt("sync", "gaming-pc", "--pull", "--dry-run", str(rig), ssh_config=ssh_host.ssh_config)
    assert dry.returncode == 0, dry.stderr
    assert not (rig / "remote.txt").exists() and "bd-2" not in (rig / ".beads/ledger.jsonl").read_text()
    assert "remote.txt" in dry.stdout

    pulled = gt("sync", "gaming-pc", "--pull", str(rig), ssh_config=ssh_host.ssh_config)
    assert pulled.returncode == 0, pulled.stderr
    assert (rig / "remote.txt").read_text() == "new\n" and "bd-2" in (rig / ".beads/ledger.jsonl").read_text()
    listing = lambda: sorted(str(p.relative_to(rig)) for p in rig.rglob("*"))  # noqa: E731
    assert listing() == [".beads", ".beads/ledger.jsonl", "remote.txt", "src.py"]


def test_sync_never_deletes_without_delete(gt: Gt, ssh_host: SshHost) -> None:
    rig = make_rig(gt.home)
    assert gt("sync", "gaming-pc", str(rig), ssh_config=ssh_host.ssh_config).returncode == 0
    (rig / "src.py").unlink()
    assert gt("sync", "gaming-pc", str(rig), ssh_config=ssh_host.ssh_config).returncode == 0
    assert ssh_host.exec("test -f /home/gamer/gt/rig1/src.py")[0] == 0
    assert gt("sync", "gaming-pc", "--delete", str(rig), ssh_config=ssh_host.ssh_config).returncode == 0
    assert ssh_host.exec("test -f /home/gamer/gt/rig1/src.py")[0] != 0


def test_sync_paths_from_config(gt: Gt, ssh_host: SshHost) -> None:
    rig = make_rig(gt.home)
    config = gt.home / "config.toml"
    config.write_text(f'[hosts.gaming-pc]\nsync = ["{rig}"]\n')
    result = gt("--config", str(config), "sync", "gaming-pc", ssh_config=ssh_host.ssh_config)
    assert result.returncode == 0, result.stderr
    assert ssh_host.exec("test -f /home/gamer/gt/rig1/src.py")[0] == 0
    nothing = gt("sync", "gaming-pc", ssh_config=ssh_host.ssh_config)
    assert nothing.returncode == 2 and "nothing to sync" in nothing.stderr


def test_sync_without_rsync_on_either_side(gt: Gt, ssh_host: SshHost) -> None:
    rig = make_rig(gt.home)
    ssh_host.sh("rm /usr/bin/rsync")
    remote = gt("sync", "gaming-pc", str(rig), ssh_config=ssh_host.ssh_config)
    assert remote.returncode == 1 and "rsync is not installed on gaming-pc" in remote.stderr
    gt.env["PATH"] = "/nonexistent"
    local = gt("sync", "gaming-pc", str(rig), ssh_config=ssh_host.ssh_config)
    assert local.returncode == 1 and "rsync is not installed on this machine" in local.stderr


# --- service ----------------------------------------------------------------------------


def test_systemd_unit_content_and_verify(gt: Gt, tmp_path: Path) -> None:
    ssh_config = tmp_path / "my ssh_config"
    ssh_config.write_text("Host gaming-pc\n    HostName 127.0.0.1\n")
    gt.env["SSH_AUTH_SOCK"] = "/tmp/ssh-agent-of-this-login/agent.42"  # changes per login: never baked in
    result = gt("service", "install", "gaming-pc", "--platform", "systemd", "--no-start", ssh_config=ssh_config)
    assert result.returncode == 0, result.stderr
    unit = gt.home / ".config/systemd/user/gt-remote-gaming-pc.service"
    text = unit.read_text()
    assert f'"-F" "{ssh_config}"' not in text and f'-F "{ssh_config}"' in text  # quoted: the path has a space
    assert "up gaming-pc --foreground" in text and "ExecStop=" in text and "down gaming-pc" in text
    assert "Restart=on-failure" in text and "RestartPreventExitStatus=2" in text and "WantedBy=default.target" in text
    assert "Type=notify\n" in text and "NotifyAccess=main\n" in text  # started = READY=1 after the Ping
    assert "network-online" not in text and "SSH_AUTH_SOCK" not in text
    assert oct(unit.stat().st_mode & 0o777) == "0o600"
    verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, env=gt.env)
    problems = [line for line in verify.stderr.splitlines() if "gt-remote-gaming-pc" in line and "Failed to connect" not in line]
    assert problems == [], verify.stderr
    status = gt("service", "status", "gaming-pc", "--platform", "systemd")
    assert status.returncode == 3 and "installed at" in status.stdout and "not active" in status.stdout  # --no-start
    removed = gt("service", "uninstall", "gaming-pc", "--platform", "systemd")
    assert removed.returncode == 0 and not unit.exists()
    assert gt("service", "status", "gaming-pc", "--platform", "systemd").returncode == 1


def test_launchd_plist_content(gt: Gt) -> None:
    gt.env["SSH_AUTH_SOCK"] = "/private/tmp/com.apple.launchd.x/Listeners"
    result = gt("service", "install", "gaming-pc", "--platform", "launchd", "--no-start")
    assert result.returncode == 0, result.stderr
    plist = gt.home / "Library/LaunchAgents/dev.gt-remote.gaming-pc.plist"
    document = plistlib.loads(plist.read_bytes())
    assert document["Label"] == "dev.gt-remote.gaming-pc"
    assert document["ProgramArguments"][-3:] == ["up", "gaming-pc", "--foreground"]
    assert document["RunAtLoad"] is True and document["KeepAlive"] == {"SuccessfulExit": False}
    assert "SSH_AUTH_SOCK" not in document["EnvironmentVariables"]  # launchd hands every agent its own


@pytest.mark.parametrize(
    ("arg", "quoted"),
    [
        ("/usr/bin/python3", "/usr/bin/python3"),
        ("100%", "100%%"),  # % starts a specifier in unit files
        ("a b", '"a b"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("back\\slash", '"back\\\\slash"'),
    ],
)
def test_systemd_quoting(arg: str, quoted: str) -> None:
    """systemd-analyze verify accepts a bad specifier silently, so the rules are checked here."""
    from gt_remote.commands.service import systemd_quote

    assert systemd_quote(arg) == quoted
