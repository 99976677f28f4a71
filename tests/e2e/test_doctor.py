"""`gt-remote doctor` against a real sshd: what ssh_config resolved, each failure with a fix, the
connect timeout, and other accounts that can reach the server's port."""

from __future__ import annotations

import json
import socket
import subprocess

from tests.conftest import Gt
from tests.e2e.helpers import default_ssh_config, doctor
from tests.testbed import SshHost

# --- doctor -----------------------------------------------------------------------------


def checks(result: subprocess.CompletedProcess[str]) -> dict[str, dict[str, str]]:
    return {check["name"]: check for check in json.loads(result.stdout)}


def test_doctor_shows_what_ssh_config_resolved_and_when_up_can_work(gt: Gt, ssh_host: SshHost) -> None:
    result = gt("doctor", "gaming-pc", "--json", ssh_config=ssh_host.ssh_config)
    found = {check["name"]: check for check in json.loads(result.stdout)}
    resolved = found["gaming-pc resolves through ssh_config"]["detail"]
    for part in (f"gamer@{ssh_host.hostname}:{ssh_host.port}", str(ssh_host.ssh_config), str(ssh_host.key.path), str(ssh_host.known_hosts)):
        assert part in resolved
    for client in ("ccmux", "ccmux-compat", "gt"):
        if found[f"{client} on PATH"]["status"] == "warn":
            assert "build" in found[f"{client} on PATH"]["fix"] and "from source" in found[f"{client} on PATH"]["fix"]
    ssh_host.sh(": > /home/gamer/.ssh/authorized_keys")
    refused = {check["name"]: check for check in json.loads(gt("doctor", "gaming-pc", "--json", ssh_config=ssh_host.ssh_config).stdout)}
    assert refused["tunnel is up"]["fix"].startswith("fix 'SSH connection and authentication' above first")


def test_doctor_resolves_through_the_default_ssh_config(gt: Gt, ssh_host: SshHost) -> None:
    default_ssh_config(gt, ssh_host.config_block())
    found = doctor(gt)
    resolved = found["gaming-pc resolves through ssh_config"]["detail"]
    assert f"gamer@{ssh_host.hostname}:{ssh_host.port}" in resolved, resolved
    assert f"keys {ssh_host.key.path};" in resolved and "b'" not in resolved
    assert "ssh_config ~/.ssh/config" in resolved
    assert found["SSH connection and authentication"]["status"] == "ok"


def test_doctor_shows_a_wrong_port_from_the_default_ssh_config(gt: Gt, ssh_host: SshHost) -> None:
    with socket.socket() as spare:  # a port where nothing listens once this closes
        spare.bind(("127.0.0.1", 0))
        wrong = spare.getsockname()[1]
    default_ssh_config(gt, ssh_host.config_block().replace(f"Port {ssh_host.port}", f"Port {wrong}"))
    found = doctor(gt)
    assert f"gamer@{ssh_host.hostname}:{wrong}" in found["gaming-pc resolves through ssh_config"]["detail"]
    assert found["SSH connection and authentication"]["status"] == "fail"


def test_doctor_names_the_connect_timeout(gt: Gt, ssh_host: SshHost) -> None:
    ssh_host.extra_config.append("ConnectTimeout 7")
    ssh_host.write_ssh_config()
    result = gt("doctor", "gaming-pc", "--json", ssh_config=ssh_host.ssh_config)
    found = {check["name"]: check for check in json.loads(result.stdout)}
    assert "connect timeout 7 s" in found["gaming-pc resolves through ssh_config"]["detail"]


def test_doctor_all_green_when_up(gt: Gt, ssh_host: SshHost) -> None:
    assert gt.up(ssh_host).returncode == 0
    gt.env["GASTOWN_CCMUX_ADDR"] = gt.local()
    result = gt("doctor", "gaming-pc", "--json", ssh_config=ssh_host.ssh_config)
    assert result.returncode == 0, result.stdout
    found = checks(result)
    assert found["GASTOWN_CCMUX_ADDR parses"]["status"] == "ok"
    assert found["gaming-pc resolves through ssh_config"]["status"] == "ok"
    assert found["SSH connection and authentication"]["detail"].startswith("logged in as gamer, to OpenSSH_")
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

