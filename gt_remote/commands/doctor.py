"""`gt-remote doctor`: a checklist, each line a mark, what was found, and a fix when it failed."""

from __future__ import annotations

import asyncio
import os
import shutil
from dataclasses import asdict, dataclass
from typing import Any

import asyncssh

from gt_remote.base.addresses import ENV_VARS, address_from_env, default_ccmux_socket, parse_address
from gt_remote.base.backs import parse_back
from gt_remote.base.config import HostSettings
from gt_remote.base.errors import GtRemoteError, UnknownHost, shell_word
from gt_remote.base.sanitize import ascii_int, visible
from gt_remote.base.service_probe import probe_service
from gt_remote.ccmux.wire import ping_address
from gt_remote.host import lifecycle
from gt_remote.remote.probe import probe
from gt_remote.remote.scripts import run_script
from gt_remote.tunnel.connection import SshTarget, connect, resolve
from gt_remote.tunnel.mux import server_software

# No release binaries exist: each client is built from its source (docs/setup.md).
CLIENTS = {
    "ccmux": "build it from source: cargo install --git https://github.com/brendanbecker/ccmux ccmux (see docs/setup.md)",
    "ccmux-compat": "build it from source: cargo install --git https://github.com/brendanbecker/ccmux ccmux-compat (see docs/gastown.md)",
    "gt": "build gastown from source: https://github.com/steveyegge/gastown (see docs/gastown.md)",
}


@dataclass
class Check:
    name: str
    status: str  # "ok", "fail", "warn" (informational: does not fail the run)
    detail: str
    fix: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_environment() -> list[Check]:
    checks = []
    for var in ENV_VARS:
        value = os.environ.get(var)
        if not value:
            detail = f"unset: ccmux clients use the local socket {default_ccmux_socket().path}" if var != "FUGUE_ADDR" else "unset"
            checks.append(Check(f"{var} parses", "ok", detail))
            continue
        try:
            checks.append(Check(f"{var} parses", "ok", parse_address(value).url))
        except GtRemoteError as error:
            checks.append(Check(f"{var} parses", "fail", error.cause, error.fix))
    return checks


async def check_host(settings: HostSettings) -> list[Check]:
    """Resolve, authenticate, find the server: one connection, stopping at the first failure."""
    target = SshTarget(settings.destination, settings.ssh_config, settings.keepalive)
    resolved = resolve(target)
    described = resolved.describe() if resolved else settings.destination
    try:
        conn = await connect(target)
    except UnknownHost as error:
        return [Check(f"{settings.name} resolves through ssh_config", "fail", f"{error.cause}; ssh_config gave {described}", error.fix)]
    except GtRemoteError as error:
        return [
            Check(f"{settings.name} resolves through ssh_config", "ok", described),
            Check("SSH connection and authentication", "fail", error.cause, error.fix),
        ]
    checks = [
        Check(f"{settings.name} resolves through ssh_config", "ok", described),
        Check("SSH connection and authentication", "ok", f"logged in as {conn.get_extra_info('username')}, to {server_software(conn)}"),
    ]
    async with conn:
        facts = await probe(conn, settings.server, settings.remote_port)
        accounts = await other_login_accounts(conn)
    if facts.path:
        checks.append(Check(f"{settings.server} on the remote", "ok", f"{facts.path}, version {facts.version or 'unknown'} ({facts.os} {facts.arch})"))
    elif settings.server_binary or settings.install_command:
        how = f"uploads {settings.server_binary}" if settings.server_binary else "runs the install command"
        checks.append(Check(f"{settings.server} on the remote", "warn", f"not installed on {settings.name} yet ({facts.os} {facts.arch}); 'up' {how}"))
    else:
        checks.append(Check(f"{settings.server} on the remote", "fail", f"not found on {settings.name} ({facts.os} {facts.arch})", "pass --server-binary or --install-command to 'gt-remote up'"))
    if facts.wsl:
        checks.append(check_wsl(settings.name, facts.wsl))
    checks.append(check_other_accounts(settings, accounts))
    return checks


# Accounts that can log in: a uid of a person (1000 and up, below nobody's 65534) and a shell
# that is one. Their count and first names, for check_other_accounts.
OTHER_ACCOUNTS_SCRIPT = r"""
me=$(id -u)
(getent passwd 2>/dev/null || cat /etc/passwd 2>/dev/null) | awk -F: -v me="$me" '
    $3 != me && $3 >= 1000 && $3 < 65534 && $7 !~ /(nologin|false|sync|shutdown|halt)$/ && $7 != "" { n++; if (n <= 3) print "account=" $1 }
    END { print "accounts=" n + 0 }'
"""


async def other_login_accounts(conn: asyncssh.SSHClientConnection) -> tuple[int, list[str]]:
    """How many other accounts can log in to the remote, and the first few names."""
    result = await run_script(conn, OTHER_ACCOUNTS_SCRIPT)
    names = [visible(line[8:])[:32] for line in result.stdout.splitlines() if line.startswith("account=")]
    return ascii_int(result.fields.get("accounts")) or 0, names


def check_other_accounts(settings: HostSettings, accounts: tuple[int, list[str]]) -> Check:
    """ccmux has no authentication: any account on the gaming PC can connect to its TCP port
    and type into every pane. gt-remote keeps other accounts from getting a byte of the
    tunnel's, but cannot keep them off the server's port: say so where there are some."""
    count, names = accounts
    name = "no other account can reach the server's TCP port"
    if count == 0:
        return Check(name, "ok", f"{settings.name} has no other login account")
    shown = ", ".join(names) + (f" and {count - len(names)} more" if count > len(names) else "")
    return Check(
        name,
        "warn",
        f"{settings.name} has {count} other login account{'s' if count != 1 else ''} ({shown}); any of them can connect to 127.0.0.1:{settings.remote_port}, "
        "and ccmux has no authentication",
        f"limit the port to your uid there, e.g. 'iptables -A OUTPUT -o lo -p tcp --dport {settings.remote_port} -m owner ! --uid-owner YOU -j REJECT' (see docs/security.md), "
        "or use a machine where you are the only user",
    )


def check_wsl(host: str, distro: str) -> Check:
    """A warning: nothing gt-remote can see says whether Windows is set to keep the distro up."""
    return Check(
        "WSL2 keeps the distro running",
        "warn",
        f"{host} is WSL2 ({distro}): Windows stops an idle distro, and ccmux-server and its panes with it",
        "set instanceIdleTimeout=-1 under [general] in %UserProfile%\\.wslconfig (WSL 2.5.4 or newer; vmIdleTimeout keeps only the VM), then run 'wsl --shutdown' once (see docs/wsl.md)",
    )


def check_tunnel(name: str, host_checks: list[Check] | None = None) -> Check:
    """Suggest `up` only when it can work: not while SSH or the server check fails."""
    status = lifecycle.host_status(name)
    if status["state"] == "up":
        return Check("tunnel is up", "ok", f"{status['local']} (supervisor pid {status['supervisor_pid']})")
    detail = f"state {status['state']}" + (f": {status['last_error']}" if status.get("last_error") else "")
    blocking = [check for check in host_checks or [] if check.status == "fail"]
    if blocking:
        return Check("tunnel is up", "fail", detail, f"fix '{blocking[0].name}' above first; then: eval \"$(gt-remote up {shell_word(name)})\"")
    return Check("tunnel is up", "fail", detail, f"eval \"$(gt-remote up {shell_word(name)})\"")


def check_resumable(status: dict[str, Any]) -> Check:
    """A warning, not a failure: plain forwarding works, connections just end with the SSH link."""
    if status.get("resumable"):
        way = (
            f"; streams go through the stdio transport (an exec channel's stdin and stdout): {status.get('transport_reason')}"
            if status.get("transport") == "stdio"
            else "; streams go through sshd's channels to the relay's socket"
        )
        path = f"; Pings go {status['server_path']}" if status.get("server_path") else ""
        return Check("connections are resumable", "ok", f"a client's connection waits up to {status.get('resume_window_s'):g} s for the tunnel to come back{way}{path}")
    return Check(
        "connections are resumable",
        "warn",
        f"no: {status.get('resumable_reason') or 'unknown'}; connections end when the SSH connection drops"
        + (f"; they and Pings go {status['server_path']}" if status.get("server_path") else ""),
        f"install python3 (3.8 or newer) on the remote, then 'gt-remote down {shell_word(status['host'])}' and 'gt-remote up {shell_word(status['host'])}' (see docs/resume.md)",
    )


def check_back_tunnels(settings: HostSettings, status: dict[str, Any]) -> list[Check]:
    """Each back tunnel: does the gaming PC's port listen (and why not), its traffic, whether
    the laptop's service answers (for dolt, its MySQL greeting), and whether the panes have
    the variables that name it."""
    running = {back.get("spec"): back for back in status.get("back") or []} if status.get("state") == "up" else {}
    checks = []
    for text in settings.back or tuple(running):
        spec = parse_back(text)
        back = running.get(spec.canonical)
        if back is not None:
            checks.append(_back_listens(status["host"], back))
        answer = asyncio.run(probe_service(spec.local_host, spec.local_port, spec.protocol, 2.0))
        name = f"back tunnel {spec.canonical}: the laptop's {spec.local_text} answers"
        if answer.answers:
            checks.append(Check(name, "ok", answer.detail))
        else:
            checks.append(Check(name, "warn", answer.detail, "start the service on this laptop; the back tunnel waits for it"))
    lacking = status.get("server_env_lacking") if status.get("state") == "up" else None
    if lacking:
        shown = " ".join(f"{key}={value}" for key, value in sorted(lacking.items()))
        checks.append(Check("the panes have the back tunnels' variables", "warn", f"the server was started without {shown}", f"gt-remote restart-server {shell_word(status['host'])} --yes (its panes' processes end)"))
    return checks


def _back_listens(host: str, back: dict[str, Any]) -> Check:
    name = f"back tunnel {back.get('spec')}: {back.get('remote')} listens on {host}"
    traffic = f"{back.get('connections_open', 0)} open, {back.get('connections_total', 0)} in all, {back.get('connections_refused', 0)} refused, {back.get('bytes_to_laptop', 0)}/{back.get('bytes_to_remote', 0)} bytes"
    error = f"; last error: {back['last_error']}" if back.get("last_error") else ""
    if back.get("state") == "listening":
        return Check(name, "ok", f"{back.get('mode')}; {traffic}{error}")
    if back.get("state") == "refused":
        return Check(name, "fail", back.get("why") or "refused", "pick another port on the gaming PC, e.g. --back dolt:13307 (see docs/usage.md#back-tunnels)")
    return Check(name, "warn", f"{back.get('state')}: {back.get('why') or 'not listening yet'}; {traffic}{error}")


async def check_ping(name: str | None) -> Check:
    """Ping what gastown would use: $GASTOWN_CCMUX_ADDR, else the host's local address."""
    try:
        if os.environ.get("GASTOWN_CCMUX_ADDR") or not name:
            address, source = address_from_env(), "GASTOWN_CCMUX_ADDR"
        else:
            status = lifecycle.host_status(name)
            if not status.get("local"):
                return Check("ccmux Ping answered", "fail", f"no address for {name}", f"eval \"$(gt-remote up {shell_word(name)})\"")
            address, source = parse_address(status["local"]), f"{name}'s local address (GASTOWN_CCMUX_ADDR is unset)"
        rtt = await ping_address(address, timeout=5)
        return Check("ccmux Ping answered", "ok", f"{address.url} via {source}, {rtt * 1000:.2f} ms")
    except GtRemoteError as error:
        return Check("ccmux Ping answered", "fail", error.cause, error.fix)


def check_clients() -> list[Check]:
    checks = []
    for program, where in CLIENTS.items():
        path = shutil.which(program)
        checks.append(Check(f"{program} on PATH", "ok" if path else "warn", path or "not found", "" if path else where))
    return checks


def run(settings: HostSettings | None) -> list[Check]:
    checks = check_environment()
    if settings is not None:
        host_checks = asyncio.run(check_host(settings))
        checks += host_checks
        checks.append(check_tunnel(settings.name, host_checks))
        status = lifecycle.host_status(settings.name)
        if status["state"] == "up":
            checks.append(check_resumable(status))
        checks += check_back_tunnels(settings, status)
    checks.append(asyncio.run(check_ping(settings.name if settings else None)))
    checks += check_clients()
    return checks


MARKS = {"ok": "✓", "fail": "✗", "warn": "!"}


def render(checks: list[Check]) -> str:
    lines = []
    for check in checks:
        lines.append(f"{MARKS[check.status]} {check.name}: {check.detail}")
        if check.fix and check.status != "ok":
            lines.append(f"    fix: {check.fix}")
    return "\n".join(lines)
