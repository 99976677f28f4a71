"""The login unit is built only from values that cannot break it: control characters are
refused, `%` and `$` are escaped where systemd expands them, the plist is XML; it pins no PATH
copy; and a service manager that will not start it makes `service install` fail, saying why."""

from __future__ import annotations

import os
import plistlib
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Gt
from tests.helpers import one_error_line

UNIT_DIR = ".config/systemd/user"


ODD_HOSTS = ["pc%i", "a$HOME", "we ird", "back\\", 'say"hi"', "<x&y>", "pc;touch x", "ünï", "${PATH}"]


def units(gt: Gt) -> list[Path]:
    return sorted((gt.home / UNIT_DIR).glob("*.service"))


@pytest.mark.parametrize(
    ("variable", "host"),
    [("PATH", "gaming-pc"), ("XDG_STATE_HOME", "gaming-pc"), (None, "gaming-pc\nExecStartPost=/bin/touch /tmp/pwned")],
)
def test_a_control_character_is_refused_and_nothing_is_written(gt: Gt, variable: str | None, host: str) -> None:
    if variable:
        gt.env[variable] = gt.env.get(variable, "/x") + "\nExecStartPost=/bin/touch /tmp/pwned"
    result = gt("service", "install", host, "--platform", "systemd", "--no-start")
    assert result.returncode == 2, result.stderr
    line = one_error_line(result.stderr)
    assert "contains a control character (\\x0a)" in line and (variable or "the host name") in line
    assert units(gt) == []
    launchd = gt("service", "install", host, "--platform", "launchd", "--no-start")
    assert launchd.returncode == 2 and not (gt.home / "Library").exists()


@pytest.mark.parametrize("host", ODD_HOSTS)
def test_systemd_analyze_verify_accepts_odd_host_names(gt: Gt, host: str) -> None:
    gt.env["XDG_STATE_HOME"] = str(gt.home / "state 100% $HOME")
    result = gt("service", "install", host, "--platform", "systemd", "--no-start")
    assert result.returncode == 0, result.stderr
    [unit] = units(gt)
    text = unit.read_text()
    verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, env=gt.env)
    problems = [line for line in verify.stderr.splitlines() if unit.name in line and "Failed to connect" not in line]
    assert problems == [], verify.stderr
    description = next(line for line in text.splitlines() if line.startswith("Description="))
    assert "%" not in description.replace("%%", "") and not description.endswith("\\")
    exec_start = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    assert "$" not in exec_start.replace("$$", ""), exec_start  # no $VAR expansion left to systemd
    assert "%" not in exec_start.replace("%%", "")
    environment = next(line for line in text.splitlines() if line.startswith("Environment=") and "XDG_STATE_HOME" in line)
    assert "$$" not in environment and "100%%" in environment  # Environment= expands specifiers, never $


def test_the_plist_is_xml_for_odd_host_names(gt: Gt) -> None:
    for host in ODD_HOSTS:
        result = gt("service", "install", host, "--platform", "launchd", "--no-start")
        assert result.returncode == 0, result.stderr
    for plist in (gt.home / "Library/LaunchAgents").glob("*.plist"):
        document = plistlib.loads(plist.read_bytes())
        assert document["ProgramArguments"][-3] == "up" and document["ProgramArguments"][-2] in ODD_HOSTS


def test_the_unit_pins_no_path_and_says_what_exit_2_means(gt: Gt) -> None:
    assert gt("service", "install", "gaming-pc", "--platform", "systemd", "--no-start").returncode == 0
    text = (gt.home / UNIT_DIR / "gt-remote-gaming-pc.service").read_text()
    assert "PATH=" not in text and "--config" not in text  # the default config is found at each start
    assert "# Written by 'gt-remote service install'. Exit 2 means bad input" in text


def test_a_moved_config_is_named_when_the_service_runs(gt: Gt, tmp_path: Path) -> None:
    config = tmp_path / "gt-remote.toml"
    config.write_text("")
    assert gt("--config", str(config), "service", "install", "gaming-pc", "--platform", "systemd", "--no-start").returncode == 0
    text = (gt.home / UNIT_DIR / "gt-remote-gaming-pc.service").read_text()
    assert f"--config {config}" in text
    config.unlink()
    gt.env["INVOCATION_ID"] = "0123456789abcdef"  # as systemd sets it for a unit
    result = gt("--config", str(config), "up", "gaming-pc", "--foreground")
    assert result.returncode == 2  # RestartPreventExitStatus=2: the unit waits for the fix
    line = one_error_line(result.stderr)
    assert f"config file {config} does not exist" in line and "install the service again with 'gt-remote --config NEW_PATH service install HOST'" in line
    gone = tmp_path / "moved_ssh_config"
    result = gt("-F", str(gone), "up", "gaming-pc", "--foreground")
    assert result.returncode == 2
    assert f"ssh_config file {gone} does not exist; the login service names this file" in one_error_line(result.stderr)


def test_install_fails_when_the_service_manager_refuses(gt: Gt, tmp_path: Path) -> None:
    """A stand-in for systemctl (never the machine's own user manager) that refuses to enable."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "systemctl"
    fake.write_text('#!/bin/sh\ncase "$*" in *enable*) echo "Failed to enable unit: Unit file gt-remote-gaming-pc.service is masked." >&2; exit 1 ;; esac\nexit 0\n')
    fake.chmod(0o755)
    gt.env["PATH"] = f"{bin_dir}{os.pathsep}{gt.env['PATH']}"
    result = gt("service", "install", "gaming-pc", "--platform", "systemd")
    assert result.returncode == 1, result.stderr
    line = one_error_line(result.stderr)
    assert "'systemctl --user enable --now gt-remote-gaming-pc.service' failed: Failed to enable unit" in line and "is masked" in line
    assert "run it in your login session" in line


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

