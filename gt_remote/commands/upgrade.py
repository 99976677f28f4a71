"""`gt-remote upgrade HOST --server-binary PATH`: switch a host's running server to another build.

The supervisor does the work over the connection it already holds, so the tunnel stays
up; restarting the server ends the panes' processes, which is why the CLI asks first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gt_remote.base import config
from gt_remote.base.builds import file_digest
from gt_remote.base.errors import GtRemoteError, UsageError, shell_word
from gt_remote.base.paths import HostFiles
from gt_remote.host import client, lifecycle

UPGRADE_TIMEOUT = 1800.0  # an upload of a large build over a slow link


@dataclass(frozen=True)
class Plan:
    host: str
    binary: str
    digest: str
    running: dict[str, Any]  # the live status's "server"
    install_dir: str | None = None  # where the new build goes; None: where the host's builds are
    running_binary: str | None = None  # the server_binary the running tunnel was brought up with

    @property
    def needed(self) -> bool:
        return self.running.get("build") != self.digest

    def warning(self) -> str:
        server = self.running
        described = f"{server.get('name')} {server.get('version') or ''} (pid {server.get('pid')}, build {server.get('build') or '?'})".replace("  ", " ")
        return f"upgrading restarts {described} on {self.host} with build {self.digest}: every pane's process there ends"


def plan(host: str, binary: str, install_dir: str | None = None) -> Plan:
    """What an upgrade would replace; refuses a host that is not up or a missing file."""
    path = Path(binary).expanduser()
    if not path.is_file():
        raise UsageError(f"server binary {path} does not exist", "pass the path of the ccmux-server you built for the remote")
    status = lifecycle.require_up(host)
    server = status.get("server") or {}
    if not server.get("started_by_gt_remote"):
        raise UsageError(
            f"the server {host} uses was not started by gt-remote, so gt-remote will not replace it",
            "stop it yourself on the remote, then run 'gt-remote down' and 'gt-remote up' with --server-binary",
        )
    if install_dir is not None:
        install_dir = config.install_dir_value(install_dir)
    running_binary = (status.get("settings") or {}).get("server_binary")
    return Plan(host, str(path.resolve()), file_digest(str(path)), server, install_dir, running_binary)


def run(plan_: Plan) -> dict[str, Any]:
    """Ask the supervisor to upload, stop the old server and start the new one; its new status."""
    files = HostFiles(plan_.host)
    reply = client.ask(files, {"op": "upgrade", "server_binary": plan_.binary, "install_dir": plan_.install_dir}, timeout=UPGRADE_TIMEOUT)
    if reply is None:
        raise GtRemoteError(f"the supervisor of {plan_.host} did not answer the upgrade", f"see its log: gt-remote logs {shell_word(plan_.host)}")
    if not reply.get("ok"):
        raise client.error_from_dict(reply.get("error") or {})
    server: dict[str, Any] = reply["server"]
    lifecycle.remember_installed_build(plan_.host, plan_.binary, plan_.digest, plan_.running_binary)  # the next `up` uses it
    return server


def restart_plan(host: str) -> dict[str, Any]:
    """The running server `restart-server` would restart; refuses one gt-remote did not start."""
    server: dict[str, Any] = lifecycle.require_up(host).get("server") or {}
    if not server.get("started_by_gt_remote"):
        raise UsageError(
            f"the server {host} uses was not started by gt-remote, so gt-remote will not restart it",
            "restart it yourself on the remote with the variables 'gt-remote status --json' lists under back",
        )
    return server


def restart(host: str) -> dict[str, Any]:
    """Ask the supervisor to stop its server and start the same build again; the new server."""
    reply = client.ask(HostFiles(host), {"op": "restart_server"}, timeout=120.0)
    if reply is None:
        raise GtRemoteError(f"the supervisor of {host} did not answer the restart", f"see its log: gt-remote logs {shell_word(host)}")
    if not reply.get("ok"):
        raise client.error_from_dict(reply.get("error") or {})
    server: dict[str, Any] = reply["server"]
    return server
