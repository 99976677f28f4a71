"""The CLI section: what a new shell pays for `eval "$(gt-remote env HOST)"`, a prompt for
`gt-remote status` and a polecat's spawn for `gt-remote pick`, side by side with `python -c "import click"` (the floor of any click
command line) in one run, interleaved so drift hits all alike.

Wall time is spawn to exit; peak memory is the child's own ru_maxrss from wait4. A child
forked from this (large) bench process would start with the bench's memory counted in its
peak, so a small launcher (`python -I -S`) forks and times each command. Both run against
a live tunnel, so each command does its whole job. Python's bytecode cache is allowed for
the children (as a pip install has it) and one discarded warm-up run fills it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.testbed import Gt

CLICK = 'python -c "import click"'
BARE = 'python -c "pass"'


def command_line() -> list[str]:
    """The installed `gt-remote` next to this interpreter (what a shell runs), else -m."""
    script = Path(sys.executable).with_name("gt-remote")
    return [str(script)] if script.exists() else [sys.executable, "-m", "gt_remote"]


def commands(host: str) -> dict[str, list[str]]:
    gt = command_line()
    return {
        BARE: [sys.executable, "-c", "pass"],
        CLICK: [sys.executable, "-c", "import click"],
        f"gt-remote env {host}": [*gt, "env", host],
        "gt-remote status": [*gt, "status"],
        "gt-remote --version": [*gt, "--version"],
        "gt-remote pick": [*gt, "pick"],  # the host with the most room (#32): the supervisors' cached figures, a reservation written under a lock
    }


def pool_config(gt: Gt, host: str) -> None:
    """The host as a pool member in the config, as a pool's user has it: `pick` then reads and
    parses the config file, as it does in real use (the other commands never read it)."""
    config = Path(gt.env["XDG_CONFIG_HOME"]) / "gt-remote" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f'[hosts."{host}"]\npool = true\nmax_sessions = 8\n')
    config.chmod(0o600)


LAUNCHER = """
import os, sys, time
started = time.perf_counter()
pid = os.fork()
if pid == 0:
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    try:
        os.execvp(sys.argv[1], sys.argv[1:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
print(time.perf_counter() - started, usage.ru_maxrss, os.waitstatus_to_exitcode(status))
"""


def run_once(argv: list[str], env: dict[str, str]) -> tuple[float, int, int]:
    """(wall seconds, peak RSS KiB of the command itself, exit code), through the small launcher."""
    result = subprocess.run([sys.executable, "-I", "-S", "-c", LAUNCHER, *argv], env=env, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"bench: the launcher failed: {result.stderr.strip()}")
    seconds, kib, code = result.stdout.split()
    return float(seconds), int(kib), int(code)


def measure(gt: Gt, host: str, reps: int) -> dict[str, Any]:
    env = {key: value for key, value in gt.env.items() if key != "PYTHONDONTWRITEBYTECODE"}
    pool_config(gt, host)
    cases = commands(host)
    wall: dict[str, list[float]] = {name: [] for name in cases}
    maxrss: dict[str, list[int]] = {name: [] for name in cases}
    for name, argv in cases.items():  # warm-up: fills the bytecode cache, checks each command works
        _, _, code = run_once(argv, env)
        if code != 0:
            raise RuntimeError(f"bench: `{name}` exited {code} against a live tunnel")
    for _ in range(reps):
        for name, argv in cases.items():
            seconds, kib, _ = run_once(argv, env)
            wall[name].append(seconds)
            maxrss[name].append(kib)
    return {"wall_s": wall, "maxrss_kib": maxrss, "reps": reps, "host": host}
