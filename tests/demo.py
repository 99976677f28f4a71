"""`make demo`: a short tour of gt-remote against a throwaway "gaming PC" container.

Everything here is what a user does by hand, narrated: a container with sshd stands in for
the gaming PC, and the ccmux-server stand-in for the real server they would build.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.testbed import NOT_INHERITED, REPO, STANDIN, ClientKey, SshHost, free_loopback_port, start_host

BOLD, DIM, RESET = ("\033[1m", "\033[2m", "\033[0m") if sys.stdout.isatty() else ("", "", "")


def step(text: str) -> None:
    print(f"\n{BOLD}==> {text}{RESET}", flush=True)


def show(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    printable = " ".join(shlex.quote(part) for part in cmd).replace(sys.executable + " -m gt_remote", "gt-remote")
    print(f"{DIM}${RESET} {printable}", flush=True)
    result = subprocess.run(cmd, env=env, text=True, capture_output=True)
    for line in (result.stdout + result.stderr).splitlines():
        print(f"    {line}")
    return result


def main() -> int:
    # The scratch dirs hold a private key, a home and a supervisor's sockets: removed at the end,
    # whether the demo passes, fails or is interrupted (Ctrl-C; SIGTERM and SIGHUP end it the same way).
    work = Path(tempfile.mkdtemp(prefix="gt-remote-demo-"))
    runtime = Path(tempfile.mkdtemp(prefix="gtr-demo-"))  # short: a Unix socket's path is limited
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupted)
    host: SshHost | None = None
    env: dict[str, str] | None = None
    try:
        step("Starting a throwaway 'gaming PC': a container running OpenSSH (user 'gamer', key login only)")
        key = ClientKey.create(work)
        host = start_host(work / "gaming-pc", key, alias="gaming-pc")
        print(f"    sshd answers on 127.0.0.1:{host.port}; its host key is pinned in {host.known_hosts}")
        env = {
            **os.environ, "HOME": str(work / "home"), "XDG_STATE_HOME": str(work / "state"), "XDG_CONFIG_HOME": str(work / "config"),
            "XDG_RUNTIME_DIR": str(runtime), "PYTHONPATH": str(REPO),
        }  # fmt: skip
        for name in NOT_INHERITED:  # your agent, your tunnel's variables: the demo uses none of your world
            env.pop(name, None)
        return tour(work, host, env)
    finally:
        if env is not None:  # a supervisor that a failed or interrupted step left running
            subprocess.run([sys.executable, "-m", "gt_remote", "down", "--all"], env=env, capture_output=True, timeout=60)
        if host is not None:
            step("Removing the container")
            host.container.stop()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(runtime, ignore_errors=True)


def _interrupted(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def tour(work: Path, host: SshHost, env: dict[str, str]) -> int:
    """The steps a user takes, each command shown with what it printed."""
    # Its own config, naming a free laptop port: your own tunnel may hold the default 127.0.0.1:9999.
    config = work / "config" / "gt-remote" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'[hosts.gaming-pc]\nlocal = "tcp://127.0.0.1:{free_loopback_port()}"\n')
    gt = [sys.executable, "-m", "gt_remote", "-F", str(host.ssh_config)]
    step("An ssh_config entry names it 'gaming-pc', as you would write in ~/.ssh/config")
    print("\n".join(f"    {line}" for line in host.config_block().splitlines()))
    print(f"    {DIM}and the demo's gt-remote config gives its tunnel a port of its own (yours may hold 9999):{RESET}")
    print("\n".join(f"    {line}" for line in config.read_text().splitlines()))

    step("gt-remote up: connect, upload the server (a stand-in for your ccmux-server build), start it, tunnel it")
    up = show([*gt, "up", "gaming-pc", "--server-binary", str(STANDIN)], env)
    if up.returncode != 0:
        return 1
    print(f"    {DIM}(stdout is only the export lines, so eval \"$(gt-remote up gaming-pc)\" works){RESET}")
    for line in up.stdout.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        env[name] = shlex.split(value)[0]

    step("gt-remote status: live from the supervisor that keeps the tunnel up")
    show([*gt, "status"], env)

    step("A ccmux Ping through $GASTOWN_CCMUX_ADDR, as gastown's panes will connect")
    if show([*gt, "ping"], env).returncode != 0:
        return 1

    step("gt-remote up again: idempotent, same lines, no second tunnel")
    show([*gt, "up", "gaming-pc"], env)

    step("gt-remote down --stop-server: stop the tunnel and the server it started (without the flag the server keeps your panes running)")
    show([*gt, "down", "gaming-pc", "--stop-server"], env)
    print("\nDone. On a real machine: pipx install . ; add a Host entry to ~/.ssh/config ; eval \"$(gt-remote up gaming-pc)\"")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted; the container and the scratch dirs are gone", file=sys.stderr)
        sys.exit(130)
