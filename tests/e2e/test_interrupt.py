"""Ctrl-C during `up`, at any moment of its timeline, leaves nothing behind (issue #30, item 6).

A terminal's Ctrl-C sends SIGINT to its foreground process group: here `up` runs in a process
group of its own, as a job of a shell would, and the test signals that group (by the pid of the
`up` it started). After each interruption either `up` had already succeeded (exit 0 and the
tunnel answers; then `down --stop-server`), or nothing it started is left: no supervisor, no local
listener, record or control socket here; no server, relay, lease or back-tunnel listener of this
`up` there, no partial upload, and no relay it uploaded. One container serves every point: the
remote is put back in the same state before each (its processes and gt-remote's remote files),
so the points stay independent.

The remote comes in three states, as a user's does:
- cold: nothing of gt-remote there; `up` uploads the server and the relay, starts both;
- warm: both installed, nothing running (after `down --stop-server`, or a reboot); the bring-up
  script itself starts the relay, and `up` starts the server;
- running: both running (after a plain `down`); `up` reuses them, and must leave them running.
Points are taken at each step the supervisor reports (watched on its control socket), at
fractions of an undisturbed `up`'s measured duration, and at the moment the bring-up script has
started the relay on a warm remote but not yet said so. That last window is as wide as the relay
takes to start; the gaming PC here is a slow one, whose relay takes a second to start (a python3
first on its PATH that waits before running the relay), so the window is there to be hit.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gt_remote.host.spawn import UNDO_SIGNAL
from gt_remote.runtime import control
from tests.conftest import Gt
from tests.helpers import ping, supervisor_processes, tcp_port_free
from tests.testbed import STANDIN, USER, SshHost, free_loopback_port, wait_for

HOME = f"/home/{USER}"
SHARE = f"{HOME}/.local/share/gt-remote"
STATE = f"{HOME}/.local/state/gt-remote"
SLOW_PYTHON = f"{HOME}/slow-bin/python3"  # first on the login shell's PATH: the relay starts a second late
SLOW_PYTHON_TEXT = '#!/bin/sh\ncase " $* " in *relay_agent.py*) sleep 1 ;; esac\nexec /usr/bin/python3 "$@"\n'
BACK_PORT = 19306  # the back tunnel's port on the gaming PC
WARM_COPY = "/tmp/gt-remote-warm-share"  # the installed builds and relay, copied back for each warm point
REMOTE_HELPER = "/tmp/interrupt-bench.py"
# Run inside the container as the login user: `look` says what runs and what is there, `reset
# cold|warm` ends the user's servers and relays and puts gt-remote's remote files back.
REMOTE_HELPER_TEXT = f"""
import glob, json, os, shutil, signal, socket, sys, time

def pids(pattern):
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{{entry}}/cmdline", "rb") as handle:
                line = handle.read().replace(b"\\0", b" ").decode(errors="replace")
        except (OSError, ValueError):
            continue
        if entry.isdigit() and pattern in line and int(entry) != os.getpid():
            found.append(int(entry))
    return sorted(found)

def look():
    try:
        socket.create_connection(("127.0.0.1", {BACK_PORT}), 1).close()
        back = True
    except OSError:
        back = False
    return {{
        "servers": pids("--listen-tcp 127.0.0.1:9999"),
        "relays": pids("relay_agent.py --socket"),
        "leases": sorted(os.listdir("{STATE}/leases/9999")) if os.path.isdir("{STATE}/leases/9999") else [],
        "back_listens": back,
        "parts": glob.glob("{SHARE}/*/*/.*.part-*"),
        "agents": glob.glob("{SHARE}/relay/*/relay_agent.py"),
    }}

if sys.argv[1] == "reset":
    deadline = time.monotonic() + 10
    while (left := look()["servers"] + look()["relays"]) and time.monotonic() < deadline:
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.02)
    shutil.rmtree("{SHARE}", ignore_errors=True)
    shutil.rmtree("{STATE}", ignore_errors=True)
    if sys.argv[2] == "warm":
        shutil.copytree("{WARM_COPY}", "{SHARE}", symlinks=True)
print(json.dumps(look()))
"""
STEPS = ("connecting", "checking the remote", "uploading", "starting server", "starting relay", "checking", "opening back tunnels")


@dataclass
class Point:
    state: str  # cold, warm or running
    step: str | None = None  # interrupt once the supervisor reports this step (or a later one)
    fraction: float | None = None  # or this far into an undisturbed `up` of this state
    relay_unreported: bool = False  # or once the bring-up script has started the relay, before it says so

    @property
    def name(self) -> str:
        if self.relay_unreported:
            return f"{self.state}, the relay started by the bring-up script"
        return f"{self.state} at {self.step!r}" if self.step else f"{self.state} at {self.fraction:.2f} of an up"


POINTS = [
    *(Point("cold", step=step) for step in STEPS),
    *(Point("warm", fraction=f) for f in (0.1, 0.3, 0.5, 0.7, 0.85, 1.0)),
    Point("warm", relay_unreported=True),
    Point("running", step="checking the remote"),
    Point("running", step="opening back tunnels"),
]


class Bench:
    """The container, the laptop's side (one home, one local port for every point), and `up`."""

    def __init__(self, gt: Gt, host: SshHost, tmp_path: Path) -> None:
        self.gt, self.host = gt, host
        self.port = free_loopback_port()
        self.service_port = free_loopback_port()  # the laptop's end of the back tunnel (nothing listens: a warning only)
        self.binary = tmp_path / "build" / "ccmux-server"  # the stand-in, padded: its upload lasts long enough to be seen
        self.binary.parent.mkdir()
        self.binary.write_text(STANDIN.read_text() + "\n#" + "x" * (2 << 20) + "\n")
        self.binary.chmod(0o755)
        self.runtime = Path(gt.env["XDG_RUNTIME_DIR"]) / "gt-remote"
        self.control = self.runtime / "gaming-pc.sock"

    def command(self) -> list[str]:
        return [
            sys.executable, "-m", "gt_remote", "-F", str(self.host.ssh_config), "up", "gaming-pc", "--server-binary", str(self.binary),
            "--local", f"tcp://127.0.0.1:{self.port}", "--back", f"{BACK_PORT}:127.0.0.1:{self.service_port}",
        ]  # fmt: skip

    def start_up(self) -> subprocess.Popen[str]:
        """`up` as a terminal's job: the leader of a process group of its own."""
        return subprocess.Popen(self.command(), env=self.gt.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)

    def undisturbed_up(self) -> float:
        started = time.monotonic()
        proc = self.start_up()
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        return time.monotonic() - started

    def step(self) -> str | None:
        reply = control.request(self.control, {"op": "status"}, timeout=1.0)
        status = reply.get("status") if reply else None
        return str(status.get("step") or "up") if isinstance(status, dict) else None

    # --- the remote: one `docker exec` per look, per reset ----------------------------------

    def remote(self, *args: str) -> dict[str, Any]:
        code, output = self.host.exec(f"python3 {REMOTE_HELPER} {' '.join(args)}", user=USER)
        assert code == 0, output
        return dict(json.loads(output.strip().splitlines()[-1]))

    def relays(self) -> list[int]:
        return list(self.remote("look")["relays"])

    def slow_down_the_relay(self) -> None:
        """The first line of ~/.bashrc (bash reads it for every command sshd runs) puts the slow
        python3 first on the PATH gt-remote's scripts find python3 on."""
        self.host.container.copy_into_container(REMOTE_HELPER_TEXT.encode(), REMOTE_HELPER, 0o755)
        self.host.container.copy_into_container(SLOW_PYTHON_TEXT.encode(), SLOW_PYTHON, 0o755)
        self.host.sh(f"chown -R {USER}: {HOME}/slow-bin")
        line = f"PATH={HOME}/slow-bin:$PATH"
        self.host.sh(f"printf '%s\\n' '{line}' | cat - {HOME}/.bashrc > /tmp/bashrc.new && cat /tmp/bashrc.new > {HOME}/.bashrc", user=USER)

    def prepare(self, state: str) -> dict[str, list[int]]:
        """The remote as a user's in `state`; the processes running before `up`, by kind."""
        self.remote("reset", "cold" if state == "cold" else "warm")
        if state != "running":
            return {"servers": [], "relays": []}
        self.undisturbed_up()
        result = self.run("down", "gaming-pc")
        assert result.returncode == 0, result.stderr
        look = self.remote("look")
        assert len(look["servers"]) == 1 and len(look["relays"]) == 1, look
        return {"servers": look["servers"], "relays": look["relays"]}

    def leftovers(self, before: dict[str, list[int]], uploaded_here: bool) -> list[str]:
        """What an interrupted (or undone) `up` left behind; empty when nothing."""
        found = []
        wait_for(lambda: supervisor_processes(self.gt.env["XDG_RUNTIME_DIR"]) == [], 30, "the supervisor to exit")
        if not tcp_port_free(self.port):
            found.append(f"the local listener 127.0.0.1:{self.port}")
        found += [f"the control socket {path.name}" for path in self.runtime.glob("*.sock")]
        found += [f"a supervisor holding {path.name}" for path in self.runtime.glob("*.pid") if control.supervisor_alive(path) is not None]
        found += [f"the record {path.name}" for path in (self.gt.home / ".local/state/gt-remote/hosts").glob("*.json")]
        look = self.remote("look")
        for kind in ("servers", "relays"):
            if look[kind] != before[kind]:
                found.append(f"{kind} {look[kind]} (before: {before[kind]})")
        if look["leases"]:
            found.append(f"leases {look['leases']}")
        if look["back_listens"]:
            found.append(f"a listener on the gaming PC's back-tunnel port {BACK_PORT}")
        if look["parts"]:
            found.append(f"partial uploads {look['parts']}")
        if uploaded_here and look["agents"]:
            found.append(f"the relay this up uploaded: {look['agents']}")
        return found

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.gt(*args, ssh_config=self.host.ssh_config)


def interrupt_at(bench: Bench, point: Point, durations: dict[str, float]) -> tuple[subprocess.Popen[str], str]:
    """Start `up`, wait for the point, send the terminal's SIGINT; the step it was in then."""
    proc = bench.start_up()
    if point.relay_unreported:

        def relay_before_the_supervisor_knows() -> bool:
            step = bench.step()
            return proc.poll() is not None or (step is not None and step not in ("starting", "connecting", "checking the remote")) or bool(bench.relays())

        wait_for(relay_before_the_supervisor_knows, 60, "the bring-up script to start the relay", interval=0.002)
    elif point.fraction is not None:
        deadline = time.monotonic() + point.fraction * durations[point.state]
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.005)
    else:
        assert point.step is not None
        later = STEPS[STEPS.index(point.step) :]

        def reached() -> bool:
            step = bench.step()
            return proc.poll() is not None or step == "up" or any(step == s or (s == "uploading" and str(step).startswith("uploading ")) for s in later)

        wait_for(reached, 60, f"the supervisor to report {point.step!r}", interval=0.002)
    seen = bench.step() or "(no supervisor answering)"
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)  # the `up` this test started leads the group: what Ctrl-C reaches
    return proc, seen


def test_ctrl_c_at_any_moment_of_up_leaves_nothing(gt: Gt, ssh_host: SshHost, tmp_path: Path) -> None:
    bench = Bench(gt, ssh_host, tmp_path)
    bench.slow_down_the_relay()
    durations = {}
    bench.prepare("cold")
    durations["cold"] = bench.undisturbed_up()
    assert bench.run("down", "gaming-pc", "--stop-server").returncode == 0
    ssh_host.sh(f"rm -rf {WARM_COPY} && cp -a {SHARE} {WARM_COPY}", user=USER)
    bench.prepare("warm")
    durations["warm"] = bench.undisturbed_up()
    assert bench.run("down", "gaming-pc", "--stop-server").returncode == 0
    print(f"undisturbed up: cold {durations['cold']:.2f} s, warm {durations['warm']:.2f} s")

    failures = []
    for point in POINTS:
        started = time.monotonic()
        before = bench.prepare(point.state)
        proc, seen = interrupt_at(bench, point, durations)
        out, err = proc.communicate(timeout=90)
        outcome = f"{point.name} (step then: {seen}): exit {proc.returncode}, {time.monotonic() - started:.1f} s"
        print(outcome)
        if proc.returncode == 0:
            try:
                ping(f"tcp://127.0.0.1:{bench.port}")
            except Exception as exc:  # noqa: BLE001 - reported with the point
                failures.append(f"{outcome}: up succeeded but the tunnel does not answer ({exc!r})")
            down = bench.run("down", "gaming-pc", "--stop-server")
            if down.returncode != 0:
                failures.append(f"{outcome}: down --stop-server failed: {down.stderr.strip()}")
            if point.state == "running":
                before = {"servers": [], "relays": []}  # --stop-server stops the reused server (and its relay) too
        elif proc.returncode == 1 and err.strip().endswith("KeyboardInterrupt"):
            pass  # Python's own: interrupted while still loading, before gt-remote's code ran
        elif proc.returncode not in (130, -signal.SIGINT):
            failures.append(f"{outcome}: not the exit of an interrupted up: {err.strip()[-400:]}")
        elif proc.returncode == 130 and out.strip() != "false":
            failures.append(f"{outcome}: stdout {out!r}, where the eval must fail")
        left = bench.leftovers(before, uploaded_here=point.state == "cold" and proc.returncode != 0)
        if left:
            log = bench.gt.home / ".local/state/gt-remote/logs/gaming-pc.log"
            tail = log.read_text().splitlines()[-12:] if log.exists() else []
            failures.append(f"{outcome}: left {'; '.join(left)}\n      up said: {err.strip()[-600:]}\n      log: " + "\n      ".join(tail))
    assert not failures, "\n".join(failures)


def test_an_up_interrupted_as_its_bring_up_finished_takes_it_down(gt: Gt, ssh_host: SshHost, tmp_path: Path) -> None:
    """The last moment: the supervisor is up, its `ready` on the way, when Ctrl-C reaches `up`,
    which then exits 130 and hands out nothing. Its signal to the supervisor (host/spawn.py's
    UNDO_SIGNAL, sent here by the pid `status` names, as that `up` would) takes the finished
    bring-up down: the server and relay it started stop, its relay upload goes, and its files."""
    bench = Bench(gt, ssh_host, tmp_path)
    ssh_host.container.copy_into_container(REMOTE_HELPER_TEXT.encode(), REMOTE_HELPER, 0o755)
    proc = bench.start_up()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    [row] = gt.status("gaming-pc")
    look = bench.remote("look")
    assert row["state"] == "up" and len(look["servers"]) == 1 and len(look["relays"]) == 1, (row, look)
    os.kill(row["supervisor_pid"], UNDO_SIGNAL)  # the supervisor this test's `up` started
    left = bench.leftovers({"servers": [], "relays": []}, uploaded_here=True)
    assert left == [], left
    assert "undoing what it started" in (gt.home / ".local/state/gt-remote/logs/gaming-pc.log").read_text()
