"""`make bench`: gt-remote side by side with OpenSSH and autossh, in one run, as ratios.

Every figure is measured against its reference in the same run, on the test bed's sshd
containers and the ccmux-server stand-in; the report (docs/benchmarks.md) shows each beside
its reference and its goal, met or not. `--smoke` runs one repetition of everything, so the
test suite keeps this code from rotting. `--only cli,memory --out DIR` runs only those sections
(quick to iterate on; the report then has only them).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import back, cli, cost, probes, report, scratch
from bench.report import PLAIN, RESUMABLE
from bench.tunnels import NO_RESUME, REMOTE_PORT, Tunnel, resumable_mode, reverse_logs, ssh_options, start_autossh, start_gt_remote, start_plain_ssh, start_reverse, wait_ready
from tests.testbed import DROPBEAR, REPO, RESTARTABLE_SSHD, STANDIN, ClientKey, Gt, SshHost, free_loopback_port, start_host, wait_for


@dataclass(frozen=True)
class Plan:
    reps: int = 20
    pause_s: float = 10.0
    kill_spacing_s: float = 1.5
    kill_cap_s: float = 10.0
    pause_cap_s: float = 15.0
    keepalive: float = 1.0  # recovery: gt-remote --keepalive 1 == ServerAliveInterval=1, CountMax=3
    pings: int = 5000
    frames: int = 64
    throughput_runs: int = 3
    idle_s: float = 60.0
    connections: tuple[int, ...] = (1, 10, 50)
    hosts: int = 5
    attached_reps: int = 5  # rounds of each fault under the long-lived clients
    outage_s: float = 6.0  # pause and network faults: beyond the keepalive budget (3 x keepalive)
    sshd_down_s: float = 1.0  # how long sshd stays dead before it is started again
    stall_cap_s: float = 15.0  # no answer this long after a fault ends counts as never
    request_gap_s: float = 0.02  # the long-lived client's pause between requests
    request_deadline_s: float = 25.0  # a request unanswered this long: the client gives up (a reset)
    cli_reps: int = 15  # interleaved runs of each short command
    cost_pings: int = 10_000  # round trips whose CPU is counted
    cost_mib: int = 1024  # MiB echoed whose CPU is counted
    connects: int = 200  # new connections, each with one Ping, per path
    back_queries: int = 2000  # SELECT 1 round trips per back path
    back_rounds: int = 10  # ... interleaved in this many rounds
    back_mb: int = 100  # MB (10**6 bytes) each way per transfer
    back_transfer_runs: int = 3
    back_kills: int = 10  # SSH sessions killed under the query loops
    back_freezes: int = 3  # SSH sessions frozen (SIGSTOP) for outage_s, then killed
    query_gap_s: float = 0.01  # the query loop's pause between queries
    query_deadline_s: float = 20.0  # a query unanswered this long is a failure
    query_retry_s: float = 0.1  # after a failed query, a new client (connection) this much later
    transport_up_reps: int = 10  # rounds of cold and warm `up` on each kind of SSH server
    transport_cold: bool = True  # cold `up`s too (not in the smoke run: its section stays a few seconds)


SMOKE = Plan(reps=1, pause_s=4.0, pings=50, frames=4, throughput_runs=1, idle_s=3.0, connections=(1, 10), hosts=2,
             attached_reps=1, outage_s=5.0, stall_cap_s=10.0, cli_reps=2, cost_pings=200, cost_mib=16, connects=4,
             back_queries=50, back_rounds=2, back_mb=16, back_transfer_runs=1, back_kills=1, back_freezes=1,
             transport_up_reps=1, transport_cold=False)


@dataclass
class Bed:
    """Containers and a private gt-remote home for this run; everything is removed at the end,
    the scratch directories (the throwaway private key among them) too (bench/scratch.py)."""

    work: Path
    key: ClientKey
    gt: Gt
    hosts: list[SshHost] = field(default_factory=list)
    tunnels: list[Tunnel] = field(default_factory=list)
    networks: list[Any] = field(default_factory=list)
    dirs: list[Path] = field(default_factory=list)

    @classmethod
    def create(cls) -> Bed:
        for path in scratch.sweep():
            say(f"removed {path}, left by a bench run over a day ago")
        work = scratch.make("gt-remote-bench-")
        dirs = [work]
        try:
            (work / "home").mkdir()
            runtime = scratch.make("gtr-bench-")  # short: a Unix socket's path is limited
            dirs.append(runtime)
            gt = Gt(work / "home", runtime)
            gt.env.pop("PYTHONDONTWRITEBYTECODE", None)  # an installed gt-remote has its bytecode cached; so does this one
            return cls(work, ClientKey.create(work), gt, dirs=dirs)
        except BaseException:
            for path in dirs:
                scratch.remove(path)
            raise

    def scratch(self, prefix: str) -> Path:
        """Another marked directory of this run's, removed with the rest."""
        path = scratch.make(prefix)
        self.dirs.append(path)
        return path

    def host(self, alias: str, own_network: bool = False, **kwargs: Any) -> SshHost:
        if own_network:  # a network of its own, so it can be disconnected without touching others
            from docker import from_env

            network = from_env().networks.create(f"gtr-bench-{os.getpid()}-{alias}", driver="bridge")
            self.networks.append(network)
            kwargs["network"] = network.name
        host = start_host(self.work / alias, self.key, alias=alias, **kwargs)
        self.hosts.append(host)
        return host

    def keep(self, tunnel: Tunnel) -> Tunnel:
        self.tunnels.append(tunnel)
        return tunnel

    def close(self) -> None:
        """Stop what the run started and remove its directories; each step is tried whatever
        the others did, and a Ctrl-C (or SIGTERM, SIGHUP) meanwhile waits for the end of it."""
        shielded = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP) if threading.current_thread() is threading.main_thread() else ()
        previous = {signum: signal.signal(signum, _cleaning_up) for signum in shielded}
        try:
            for tunnel in self.tunnels:
                _attempt(f"stopping {tunnel.name}", tunnel.stop)
            for gt in {id(self.gt): self.gt, **{id(t.gt): t.gt for t in self.tunnels if t.gt is not None}}.values():
                _attempt("gt-remote down --all", functools.partial(gt, "down", "--all"))
            for host in self.hosts:
                _attempt(f"unpausing {host.alias}", host.unpause, quiet=True)
                _attempt(f"stopping {host.alias}", host.container.stop)
            for network in self.networks:
                _attempt(f"removing network {network.name}", network.remove)
        finally:
            for path in self.dirs:
                scratch.remove(path)
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def _attempt(what: str, action: Callable[[], Any], quiet: bool = False) -> None:
    try:
        action()
    except Exception as exc:  # keep tearing down the rest
        if not quiet:
            print(f"bench: {what}: {exc}", file=sys.stderr)


def _cleaning_up(signum: int, _frame: object) -> None:
    print("bench: removing the containers and scratch directories first", file=sys.stderr, flush=True)


def _interrupted(signum: int, _frame: object) -> None:
    """SIGTERM and SIGHUP end a run as Ctrl-C does: through its clean-up."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# --- 1. recovery ------------------------------------------------------------------------


def kill_connections(host: SshHost) -> None:
    pids = host.pids("sshd: gamer")
    if pids:  # one exec: every tunnel hit at once; one that ended since it was listed is no failure
        host.exec("kill -KILL " + " ".join(str(pid) for pid in pids) + " 2>/dev/null")


def measure_after_fault(tunnels: list[Tunnel], since: float, cap: float) -> dict[str, float | None]:
    async def all_of_them() -> list[float | None]:
        return await asyncio.gather(*(probes.time_to_pong(t.port, since, cap) for t in tunnels))

    return dict(zip((t.name for t in tunnels), asyncio.run(all_of_them())))


def recovery_run(bed: Bed, plan: Plan, alias: str, fault: Callable[[SshHost], None], cap: float, spacing: float) -> dict[str, list[float | None]]:
    host = bed.host(alias)
    tunnels = [bed.keep(start_gt_remote(bed.gt, host, plan.keepalive)), bed.keep(start_autossh(host, plan.keepalive)), bed.keep(start_plain_ssh(host, plan.keepalive))]
    results: dict[str, list[float | None]] = {t.name: [] for t in tunnels}
    for rep in range(plan.reps):
        alive = [t for t in tunnels if t.proc is None or t.proc.poll() is None]
        fault(host)
        ended = time.monotonic()
        for name, seconds in measure_after_fault(alive, ended, cap).items():
            results[name].append(seconds)
        for tunnel in tunnels:
            if tunnel not in alive:
                results[tunnel.name].append(None)
        say(f"{alias} rep {rep + 1}/{plan.reps}: " + ", ".join(f"{k} {report.seconds(v[-1])}" for k, v in results.items()))
        time.sleep(spacing)  # the scenario's spacing between faults, not a synchronisation
    results["ssh -L exited"] = [1.0 if tunnels[2].proc and tunnels[2].proc.poll() is not None else 0.0]
    return results


def recovery(bed: Bed, plan: Plan) -> dict[str, Any]:
    """Kills and pauses run at once on two containers: both are mostly waiting."""

    def pause(host: SshHost) -> None:
        host.pause()
        time.sleep(plan.pause_s)  # the fault's length
        host.unpause()

    out: dict[str, Any] = {}

    failures: list[BaseException] = []

    def run(name: str, *args: Any) -> None:
        try:
            out[name] = recovery_run(bed, plan, *args)
        except BaseException as exc:  # re-raised below: the run ends with its cause, not a KeyError in the report
            failures.append(exc)

    threads = [
        threading.Thread(target=run, args=("kill", "kill-pc", kill_connections, plan.kill_cap_s, plan.kill_spacing_s)),
        threading.Thread(target=run, args=("pause", "pause-pc", pause, plan.pause_cap_s, plan.kill_spacing_s)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return out


# --- 2. bring-up ------------------------------------------------------------------------


def timed(action: Callable[[], Any]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def openssh_sequence(host: SshHost, cold: bool, port: int) -> subprocess.Popen[bytes]:
    """By hand: check for the binary (and a running server), scp it, start it, ssh -N -L, Ping."""
    opts, alias, remote = ssh_options(host, 5), host.alias, 9998
    check = subprocess.run(["ssh", *opts, alias, f"test -x bench/ccmux-server && pgrep -f 'ccmux-server --listen-tcp 127.0.0.1:{remote}' >/dev/null"])
    if check.returncode != 0:
        subprocess.run(["ssh", *opts, alias, "mkdir -p bench"], check=True)
        subprocess.run(["scp", "-q", *opts, str(STANDIN), f"{alias}:bench/ccmux-server"], check=True)
        # its own socket directory: gt-remote's server for the same user owns the default one
        start = (f"chmod +x bench/ccmux-server && mkdir -p -m 700 bench/run && (XDG_RUNTIME_DIR=$HOME/bench/run "
                 f"nohup bench/ccmux-server --listen-tcp 127.0.0.1:{remote} >bench/log 2>&1 </dev/null &)")
        subprocess.run(["ssh", *opts, alias, start], check=True)
    forward = subprocess.Popen(["ssh", "-N", *opts, "-L", f"127.0.0.1:{port}:127.0.0.1:{remote}", alias], stdin=subprocess.DEVNULL)
    wait_ready(Tunnel("openssh", port, forward))
    return forward


def up_with_steps(gt: Gt, ssh_config: Path, args: list[str]) -> list[tuple[float, str]]:
    """`gt-remote -v up`, each line of its stderr with the seconds since the command started;
    the last entry is its exit. The steps are whatever `up` reports, so the breakdown follows them."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "gt_remote", "-F", str(ssh_config), "-v", *args], env=gt.env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None and proc.stdout is not None
    steps = [(time.perf_counter() - started, line.rstrip()) for line in proc.stderr]
    proc.stdout.read()
    code = proc.wait(120)
    steps.append((time.perf_counter() - started, f"exit {code}"))
    if code != 0:
        raise RuntimeError(f"gt-remote up failed: {' / '.join(line for _, line in steps)}")
    return steps


def bring_up(bed: Bed, plan: Plan) -> dict[str, Any]:
    host = bed.host("bringup-pc")
    gt, port = bed.gt, free_loopback_port()
    up = ["up", host.alias, "--local", f"tcp://127.0.0.1:{port}", "--server-binary", str(STANDIN)]
    results: dict[str, Any] = {"gt-remote warm": [], "gt-remote cold": [], "openssh warm": [], "openssh cold": []}
    steps: dict[str, list[list[tuple[float, str]]]] = {"gt-remote warm": [], "gt-remote cold": []}

    def gt_up(case: str) -> Callable[[], None]:
        return lambda: steps[case].append(up_with_steps(gt, host.ssh_config, up))

    def openssh(cold: bool) -> float:
        holder: list[subprocess.Popen[bytes]] = []
        seconds = timed(lambda: holder.append(openssh_sequence(host, cold, free_loopback_port())))
        holder[0].terminate()  # the forward this benchmark started, by pid
        holder[0].wait(10)
        return seconds

    for rep in range(plan.reps):
        gt("down", host.alias, "--stop-server")
        host.sh("rm -rf /home/gamer/.local/share/gt-remote /home/gamer/bench; pkill -f '[c]cmux-server --listen-tcp' || true")
        results["gt-remote cold"].append(timed(gt_up("gt-remote cold")))
        gt("down", host.alias)
        results["gt-remote warm"].append(timed(gt_up("gt-remote warm")))
        results["openssh cold"].append(openssh(cold=True))
        results["openssh warm"].append(openssh(cold=False))
        say(f"bring-up rep {rep + 1}/{plan.reps}: " + ", ".join(f"{k} {v[-1]:.3f}s" for k, v in results.items()))
    gt("down", host.alias)
    results["steps"] = {case: [[(t, report.step_name(line, host.alias)) for t, line in run] for run in runs] for case, runs in steps.items()}
    results["start_up"] = start_up_costs(gt, plan)
    return results


# What `python -m gt_remote.runtime.supervisor` imports before it starts: its modules, less what it leaves out (gt_remote/base/lean.py).
SUPERVISOR_IMPORTS = "from gt_remote.base.lean import leave_out_unused; leave_out_unused(); import gt_remote.runtime.supervisor"


def start_up_costs(gt: Gt, plan: Plan) -> dict[str, list[float]]:
    """What starting the two Python processes of `up` costs on this machine, as references for
    the breakdown: the command (like `gt-remote --version`) and the supervisor's imports."""
    env = {key: value for key, value in gt.env.items() if key != "PYTHONDONTWRITEBYTECODE"}
    cases = {"command start-up (gt-remote --version)": [*cli.command_line(), "--version"],
             "supervisor imports (what its process imports, without starting it)": [sys.executable, "-c", SUPERVISOR_IMPORTS]}
    out: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(1 + max(3, plan.reps)):  # the first fills the bytecode cache and is not kept
        for name, argv in cases.items():
            out[name].append(cli.run_once(argv, env)[0])
    return {name: values[1:] for name, values in out.items()}


# --- 3. data path -----------------------------------------------------------------------


def data_path(bed: Bed, plan: Plan) -> dict[str, Any]:
    host = bed.host("data-pc", extra_ports=(19999,))
    host.install_standin("/usr/local/bin/ccmux-server")
    host.spawn("XDG_RUNTIME_DIR=/tmp/baseline exec ccmux-server --listen-tcp 0.0.0.0:19999 2>/tmp/baseline.log")
    paths = {
        "gt-remote": bed.keep(start_gt_remote(bed.gt, host, 5.0)).port,
        "ssh -L": bed.keep(start_plain_ssh(host, 5.0)).port,
        "unforwarded": wait_ready(Tunnel("unforwarded", host.published[19999])).port,
    }
    measured = measure_paths(paths, plan)
    say("data path: " + ", ".join(f"{k} p50 {probes.median(v):.0f} µs" for k, v in measured["rtt_us"].items()))
    return measured


def measure_paths(paths: dict[str, int], plan: Plan) -> dict[str, dict[str, list[float]]]:
    """Ping RTTs and echo throughput through each local port, interleaved so drift hits all alike."""
    rtts: dict[str, list[float]] = {name: [] for name in paths}
    rounds = 10
    for _ in range(rounds):
        for name, port in paths.items():
            rtts[name] += asyncio.run(probes.ping_rtts(port, max(1, plan.pings // rounds)))
    connects: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(rounds):
        for name, port in paths.items():
            connects[name] += [asyncio.run(probes.connect_and_ping(port)) for _ in range(max(1, plan.connects // rounds))]
    throughput: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(plan.throughput_runs):
        for name, port in paths.items():
            throughput[name].append(asyncio.run(probes.echo_throughput(port, plan.frames)))
    return {"rtt_us": rtts, "throughput_mib_s": throughput, "connect_us": connects}


# --- 4. scale ---------------------------------------------------------------------------


async def hold_connections(port: int, count: int) -> list[asyncio.StreamWriter]:
    writers = []
    for _ in range(count):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await probes.wire.ping(reader, writer, 10)
        writers.append(writer)
    return writers


def memory_with_connections(tunnel: Tunnel, counts: tuple[int, ...]) -> dict[int, int]:
    rss = {}
    for count in counts:
        async def measure() -> int:
            writers = await hold_connections(tunnel.port, count)
            value = sum(probes.rss_kib(pid) for pid in tunnel.pids())
            for writer in writers:
                writer.close()
            return value

        rss[count] = asyncio.run(measure())
    return rss


def remote_counters(host: SshHost) -> tuple[float, float, int]:
    """(when, CPU seconds of everything the container ran, from its cgroup, so processes that
    already ended count; the last pid its namespace handed out, that of this read's own `cat`).

    The pid is read with nsenter, which forks exactly one process into the namespace: a
    `docker exec` costs the namespace half a dozen pids of its own (runc's threads)."""
    container = host.wrapped
    stats = container.stats(stream=False)
    when = time.monotonic()
    container.reload()  # its attributes as the engine has them now, the running init's pid among them
    init = container.attrs["State"]["Pid"]
    loadavg = subprocess.run(["nsenter", "-t", str(init), "-p", "-m", "cat", "/proc/loadavg"], capture_output=True, text=True, check=True).stdout
    return when, stats["cpu_stats"]["cpu_usage"]["total_usage"] / 1e9, int(loadavg.split()[-1])


def remote_idle_cost(before: dict[str, tuple[float, float, int]], after: dict[str, tuple[float, float, int]]) -> dict[str, dict[str, float]]:
    """Per tool: processes (and threads) started on its remote per minute, and the remote's CPU
    in % of a core. The later read's own `cat` is not counted."""
    out = {}
    for name, (start, cpu_before, pid_before) in before.items():
        end, cpu_after, pid_after = after[name]
        seconds = end - start
        out[name] = {"processes_per_min": (pid_after - pid_before - 1) * 60 / seconds, "cpu_percent": 100 * (cpu_after - cpu_before) / seconds, "seconds": seconds}
    return out


def scale(bed: Bed, plan: Plan) -> dict[str, Any]:
    # What one idle tunnel costs its remote: each tool alone on a container, both with a server
    # running. Started first, so they are past bring-up when the window opens.
    # gt-remote plain too: without a relay, its health check's script reads the load figures `pick` weighs (#32).
    alone = {"gt-remote": bed.host("idle-gt-pc"), report.IDLE_PLAIN: bed.host("idle-plain-pc"), "autossh + ssh": serving(bed.host("idle-autossh-pc"))}
    lone_tunnels = [bed.keep(start_gt_remote(bed.gt, alone["gt-remote"], 5.0, name="idle gt-remote")), bed.keep(start_autossh(alone["autossh + ssh"], 5.0)),
                    bed.keep(start_gt_remote(bed.gt, alone[report.IDLE_PLAIN], 5.0, name="idle gt-remote plain", options=(NO_RESUME,)))]
    host = bed.host("scale-pc")
    aliases = [f"scale-{i}" for i in range(1, plan.hosts + 1)]
    config = bed.work / "scale_ssh_config"  # one container, named once per simulated host
    config.write_text("".join(host.config_block().replace(f"Host {host.alias}", f"Host {alias}") for alias in aliases))
    bed.gt.ssh_config = config
    gts = [bed.keep(start_gt_remote(bed.gt, host, 5.0, alias=alias)) for alias in aliases]
    autos = [bed.keep(start_autossh(host, 5.0, alias=alias, ssh_config=config)) for alias in aliases]
    everyone = gts + autos
    remote_before = {name: remote_counters(h) for name, h in alone.items()}
    before = {t: sum(probes.cpu_seconds(p) for p in t.pids()) for t in everyone}
    time.sleep(plan.idle_s)  # the idle window being measured
    after = {t: sum(probes.cpu_seconds(p) for p in t.pids()) for t in everyone}
    remote = remote_idle_cost(remote_before, {name: remote_counters(h) for name, h in alone.items()})
    for tunnel in lone_tunnels:  # measured: they do not load the sections after this one
        tunnel.stop()
    cpu = {name: [100 * (after[t] - before[t]) / plan.idle_s for t in group] for name, group in (("gt-remote", gts), ("autossh + ssh", autos))}
    rss = {name: [sum(probes.rss_kib(p) for p in t.pids()) for t in group] for name, group in (("gt-remote", gts), ("autossh + ssh", autos))}
    private = {name: [sum(probes.private_kib(p) for p in t.pids()) for t in group] for name, group in (("gt-remote", gts), ("autossh + ssh", autos))}
    maps = probes.rss_by_mapping(gts[0].pids()[0])  # one idle supervisor: where its RSS is
    connections = {"gt-remote": memory_with_connections(gts[0], plan.connections), "autossh + ssh": memory_with_connections(autos[0], plan.connections)}
    bed.gt.ssh_config = None
    say("scale: " + ", ".join(f"{k} {probes.median(v) / 1024:.1f} MiB" for k, v in rss.items()))
    return {"cpu_percent": cpu, "rss_kib": rss, "private_kib": private, "rss_with_connections_kib": connections, "hosts": plan.hosts,
            "idle_s": plan.idle_s, "import_rss_kib": import_floor(bed.gt), "supervisor_rss_by_mapping_kib": maps, "remote_idle": remote}


def import_floor(gt: Gt) -> dict[str, list[int]]:
    """Peak RSS of a Python that only imports the supervisor's modules (as its process does, and
    as a plain importer has them, with what that process leaves out), and of bare Python."""
    env = {key: value for key, value in gt.env.items() if key != "PYTHONDONTWRITEBYTECODE"}
    cases = {"supervisor": [sys.executable, "-c", SUPERVISOR_IMPORTS], "supervisor_untrimmed": [sys.executable, "-c", "import gt_remote.runtime.supervisor"],
             "python": [sys.executable, "-c", "pass"]}
    return {name: [cli.run_once(argv, env)[1] for _ in range(3)] for name, argv in cases.items()}


# --- 5. attached client -----------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """One kind of fault, on a container of its own; `inject` returns when the fault is lifted."""

    name: str
    alias: str
    inject: Callable[[SshHost, Plan], None]
    host_options: tuple[tuple[str, Any], ...] = ()


def _pause(host: SshHost, plan: Plan) -> None:
    host.pause()
    time.sleep(plan.outage_s)  # the fault's length
    host.unpause()


def _disconnect(host: SshHost, plan: Plan) -> None:
    host.disconnect()
    time.sleep(plan.outage_s)  # the fault's length
    host.connect()


FAULTS = (
    Fault("kill", "attach-kill-pc", lambda host, plan: kill_connections(host)),
    Fault("pause", "attach-pause-pc", _pause),
    Fault("network", "attach-net-pc", _disconnect, (("own_network", True),)),
    Fault("sshd", "attach-sshd-pc", lambda host, plan: host.restart_sshd(plan.sshd_down_s), (("command", RESTARTABLE_SSHD),)),
)


def attached_tunnels(bed: Bed, plan: Plan, host: SshHost, resumable: bool) -> list[Tunnel]:
    """gt-remote in each mode it has (two aliases for one container), autossh and ssh -L."""
    plain_alias = f"{host.alias}-plain"
    config = bed.work / f"{host.alias}-modes.ssh_config"
    config.write_text(host.config_block() + host.config_block().replace(f"Host {host.alias}", f"Host {plain_alias}"))
    tunnels = []
    if resumable:
        tunnels.append(start_gt_remote(bed.gt, host, plan.keepalive, name=RESUMABLE, ssh_config=config))
    plain_options = (NO_RESUME,) if resumable else ()  # before resumable streams, `up` was plain
    tunnels.append(start_gt_remote(bed.gt, host, plan.keepalive, plain_alias, name=PLAIN, options=plain_options, ssh_config=config))
    tunnels += [start_autossh(host, plan.keepalive), start_plain_ssh(host, plan.keepalive)]
    return [bed.keep(tunnel) for tunnel in tunnels]


STREAM_KEYS = ("resumable", "resumable_reason", "streams_open", "streams_resumed", "bytes_replayed", "reconnects")


def stream_status(tunnel: Tunnel) -> dict[str, Any]:
    """What `gt-remote status --json` says about a gt-remote tunnel's streams."""
    if tunnel.gt is None:
        return {}
    [row] = tunnel.gt.status(tunnel.host)
    return {key: row[key] for key in STREAM_KEYS if key in row}


def not_resumable(tunnels: list[Tunnel]) -> str:
    """Why the tunnel started as resumable says it is not (empty when it is)."""
    for tunnel in tunnels:
        if tunnel.name == RESUMABLE:
            status = stream_status(tunnel)
            if status.get("resumable") is False:
                return f"`gt-remote status` says: not resumable: {status.get('resumable_reason') or 'no reason given'}"
    return ""


class ClientLoop:
    """The long-lived clients, all on one event loop in a thread of their own, while faults
    are injected from others."""

    def __init__(self, clients: list[probes.AttachedClient]) -> None:
        self.clients = clients
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.tasks: list[asyncio.Task[None]] = []

    def __enter__(self) -> ClientLoop:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    async def _start(self) -> None:
        self.tasks = [asyncio.create_task(client.run()) for client in self.clients]

    async def _stop(self) -> None:
        for client, task in zip(self.clients, self.tasks):
            client.stopping = True
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def wait_answered(clients: list[probes.AttachedClient], since: float, deadline: float) -> None:
    """Until every client has an answer after `since`, or the deadline: the stall being measured."""
    while time.monotonic() < deadline and any(client.answered_since(since) is None for client in clients):
        time.sleep(0.02)


def time_to_banner(host: SshHost, since: float, cap: float) -> float | None:
    """Seconds from `since` until sshd's banner comes back through the published port."""
    while time.monotonic() - since < cap:
        if host.answers_ssh():
            return time.monotonic() - since
        time.sleep(0.02)
    return None


def fault_rounds(plan: Plan, fault: Fault, host: SshHost, pairs: list[tuple[Tunnel, probes.AttachedClient]]) -> dict[str, Any]:
    """Each round: inject the fault, lift it, then the stall to each client's next answer and
    the resets each client saw, up to the next round."""
    out: dict[str, Any] = {tunnel.name: {"resets": [], "stall_s": []} for tunnel, _ in pairs}
    out["sshd answers"] = {"stall_s": []}  # the floor: no tunnel can be back before sshd answers
    first = time.monotonic()
    for rep in range(plan.attached_reps):
        started = time.monotonic()
        fault.inject(host, plan)
        lifted = time.monotonic()
        out["sshd answers"]["stall_s"].append(time_to_banner(host, lifted, plan.stall_cap_s))
        waiting = [client for tunnel, client in pairs if tunnel.proc is None or tunnel.proc.poll() is None]
        wait_answered(waiting, lifted, lifted + plan.stall_cap_s)
        for tunnel, client in pairs:
            stall = client.answered_since(lifted)
            out[tunnel.name]["stall_s"].append(stall if stall is not None and stall <= plan.stall_cap_s else None)
        time.sleep(plan.kill_spacing_s)  # the scenario's spacing between faults
        for tunnel, client in pairs:
            out[tunnel.name]["resets"].append(client.resets_between(started, time.monotonic()))
        say(f"attached {fault.name} {rep + 1}/{plan.attached_reps}: " + ", ".join(
            f"{name} {sum(r.get('resets', []))} resets, stall {report.seconds(r['stall_s'][-1])}" for name, r in out.items()))
    for tunnel, client in pairs:
        out[tunnel.name].update(
            resets_before_faults=client.resets_between(0.0, first), hangs=len(client.hangs), wrong_answers=len(client.wrong),
            answered=len(client.answered), connections=client.connections, status=stream_status(tunnel))
    return out


def attached(bed: Bed, plan: Plan) -> dict[str, Any]:
    """Long-lived clients through each tunnel across each fault, the four faults at once on four
    containers; and, before the faults, what resumable mode costs on an idle tunnel."""
    resumable, why = resumable_mode(bed.gt)
    hosts: dict[str, SshHost] = {}
    tunnels: dict[str, list[Tunnel]] = {}
    for fault in FAULTS:
        hosts[fault.name] = bed.host(fault.alias, **dict(fault.host_options))
        tunnels[fault.name] = attached_tunnels(bed, plan, hosts[fault.name], resumable)
        why = why or (not_resumable(tunnels[fault.name]) if resumable else "")
    if resumable and why:  # asked for, but plain underneath: measured as not available, not as resumable
        resumable = False
        for group in tunnels.values():
            for tunnel in [t for t in group if t.name == RESUMABLE]:
                tunnel.stop()
                group.remove(tunnel)
    say("attached client: " + ("gt-remote resumable and plain" if resumable else f"gt-remote plain only ({why})"))
    cost = measure_paths({t.name: t.port for t in tunnels["kill"] if t.name != "autossh"}, plan)
    say("attached cost: " + ", ".join(f"{k} p50 {probes.median(v):.0f} µs" for k, v in cost["rtt_us"].items()))
    pairs = {name: [(t, probes.AttachedClient(t.name, t.port, plan.request_gap_s, plan.request_deadline_s)) for t in group]
             for name, group in tunnels.items()}
    clients = [client for group in pairs.values() for _, client in group]
    out: dict[str, Any] = {}
    failures: list[BaseException] = []

    def run(fault: Fault) -> None:
        try:
            out[fault.name] = fault_rounds(plan, fault, hosts[fault.name], pairs[fault.name])
        except BaseException as exc:  # re-raised below, in the main thread
            failures.append(exc)

    with ClientLoop(clients):
        wait_answered(clients, 0.0, time.monotonic() + 20.0)
        silent = [client.name for client in clients if not client.answered]
        if silent:
            raise RuntimeError(f"attached clients never answered before the faults: {silent}")
        threads = [threading.Thread(target=run, args=(fault,)) for fault in FAULTS]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    if failures:
        raise failures[0]
    return {"resumable": {"available": resumable, "why": why}, "faults": {fault.name: out[fault.name] for fault in FAULTS}, "cost": cost}


# --- 6. CLI -----------------------------------------------------------------------------


def cli_section(bed: Bed, plan: Plan) -> dict[str, Any]:
    """`gt-remote env HOST` and `gt-remote status` against a live tunnel, beside `import click`."""
    host = bed.host("cli-pc")
    gt = Gt(bed.work / "cli-home", bed.scratch("gtr-bench-cli-"))  # `status` lists this one host only
    (bed.work / "cli-home").mkdir()
    gt.env.pop("PYTHONDONTWRITEBYTECODE", None)
    tunnel = bed.keep(start_gt_remote(gt, host, 5.0))
    measured = cli.measure(gt, tunnel.host, plan.cli_reps)
    say("cli: " + ", ".join(f"{k} {probes.median(v) * 1000:.0f} ms" for k, v in measured["wall_s"].items()))
    tunnel.stop()
    return measured


# --- 7. cost -----------------------------------------------------------------------------


def serving(host: SshHost) -> SshHost:
    """A container whose server runs on the port `ssh -L` forwards to, started by hand as the
    OpenSSH sequence would (for gt-remote, `up` starts it)."""
    host.install_standin("/usr/local/bin/ccmux-server")
    host.spawn(f"mkdir -p -m 700 /tmp/by-hand && XDG_RUNTIME_DIR=/tmp/by-hand exec ccmux-server --listen-tcp 127.0.0.1:{REMOTE_PORT} 2>/tmp/by-hand.log")
    return host


def cost_section(bed: Bed, plan: Plan) -> dict[str, Any]:
    """CPU per 10,000 round trips and per GiB echoed, each tunnel alone on its own container."""
    resumable, _ = resumable_mode(bed.gt)
    starters: dict[str, Callable[[SshHost], Tunnel]] = {}
    if resumable:
        starters[RESUMABLE] = lambda host: start_gt_remote(bed.gt, host, 5.0, name=RESUMABLE)
    starters[PLAIN] = lambda host: start_gt_remote(bed.gt, host, 5.0, name=PLAIN, options=(NO_RESUME,) if resumable else ())
    starters["ssh -L"] = lambda host: start_plain_ssh(serving(host), 5.0)
    tools: dict[str, Any] = {}
    for index, (name, start) in enumerate(starters.items()):
        host = bed.host(f"cost-{index}-pc")
        tunnel = bed.keep(start(host))
        raw = cost.measure(tunnel, host, plan.cost_pings, plan.cost_mib)
        tools[name] = {**raw, **cost.per_unit(raw, plan.cost_pings, plan.cost_mib)}
        tunnel.stop()
        say(f"cost {name}: " + ", ".join(f"{k} {v:.2f} s/GiB" for k, v in tools[name]["per_gib"].items()))
    return {"pings": plan.cost_pings, "mib": plan.cost_mib, "tools": tools}


# --- 8. back tunnels ----------------------------------------------------------------------

# The container's ports each tool listens on: (the laptop's MariaDB, the laptop's source and sink).
BACK_PORTS = {RESUMABLE: (3307, 4307), PLAIN: (3308, 4308), "ssh -R": (3309, 4309), "autossh": (3310, 0)}
HELD = "remote port forwarding failed"  # ssh's words when the gaming PC's port is still held


def back_tools(bed: Bed, plan: Plan, host: SshHost, database: int, sink: int, with_ssh: bool) -> dict[str, Tunnel]:
    """On one container: gt-remote's back tunnel through the relay (`up --back`) and through
    sshd (`up --no-resume --back`, a second alias), autossh -R, and `ssh -R` if asked; each
    reaching the laptop's MariaDB, and the source and sink when `sink`."""
    plain_alias = f"{host.alias}-plain"
    config = bed.work / f"{host.alias}-modes.ssh_config"
    config.write_text(host.config_block() + host.config_block().replace(f"Host {host.alias}", f"Host {plain_alias}"))

    def specs(name: str) -> tuple[str, ...]:
        db, bulk = BACK_PORTS[name]
        return ("--back", f"dolt:{db}:127.0.0.1:{database}", *(("--back", f"{bulk}:127.0.0.1:{sink}") if sink else ()))

    def forwards(name: str) -> list[tuple[int, int]]:
        db, bulk = BACK_PORTS[name]
        return [(db, database), *([(bulk, sink)] if sink and bulk else [])]

    tools = {
        RESUMABLE: start_gt_remote(bed.gt, host, plan.keepalive, name=RESUMABLE, options=specs(RESUMABLE), ssh_config=config),
        PLAIN: start_gt_remote(bed.gt, host, plan.keepalive, plain_alias, name=PLAIN, options=(NO_RESUME, *specs(PLAIN)), ssh_config=config),
        "autossh": start_reverse(host, plan.keepalive, forwards("autossh"), autossh=True, log_dir=bed.work),
    }
    if with_ssh:
        tools["ssh -R"] = start_reverse(host, plan.keepalive, forwards("ssh -R"), autossh=False, log_dir=bed.work)
    for tunnel in tools.values():
        bed.keep(tunnel)
    ports = [port for name in tools for port, _ in forwards(name)]
    wait_for(lambda: back.listening(host, *ports), 30, f"the back tunnels to listen in {host.alias}")
    return tools


def back_status(tunnel: Tunnel) -> dict[str, Any]:
    """gt-remote's own account of its back tunnel to the database, and of its reconnects."""
    assert tunnel.gt is not None
    [row] = tunnel.gt.status(tunnel.host)
    [database] = [b for b in row.get("back") or [] if b["remote"].endswith(f":{BACK_PORTS[tunnel.name][0]}")]
    keys = ("mode", "state", "connections_total", "bytes_to_laptop", "bytes_to_remote", "last_error")
    return {**{key: database.get(key) for key in keys}, "reconnects": row.get("reconnects"), "streams_resumed": row.get("streams_resumed")}


def back_data(host: SshHost, plan: Plan, tools: dict[str, Tunnel], database: int) -> dict[str, Any]:
    """SELECT 1 round trips from inside the container (interleaved rounds, the CPU of every
    process on the path counted across them), then the transfers each way."""
    paths = [RESUMABLE, PLAIN, "ssh -R"]
    rtt: dict[str, list[float]] = {name: [] for name in paths}
    client_rtt: dict[str, list[float]] = {name: [] for name in paths}
    cpu: dict[str, dict[str, float]] = {name: {} for name in paths}
    per_round = max(1, plan.back_queries // plan.back_rounds)
    for _ in range(plan.back_rounds):
        for name in paths:
            before = cost.cpu(tools[name], host)
            rtt[name] += back.rtts(host, BACK_PORTS[name][0], per_round)
            after = cost.cpu(tools[name], host)
            for kind, value in after.items():
                cpu[name][kind] = cpu[name].get(kind, 0.0) + value - before.get(kind, 0.0)
            client_rtt[name] += back.rtts(host, BACK_PORTS[name][0], max(1, per_round // 4), through_client=True)
    rtt["unforwarded"] = back.local_rtts(database, plan.back_queries)
    size = plan.back_mb * 1_000_000
    transfer: dict[str, dict[str, list[float]]] = {name: {"to": [], "from": []} for name in paths}
    bulk_cpu: dict[str, dict[str, float]] = {name: {} for name in paths}
    for _ in range(plan.back_transfer_runs):
        for name in paths:
            before = cost.cpu(tools[name], host)
            for direction in ("to", "from"):
                transfer[name][direction].append(back.transfer(host, direction, BACK_PORTS[name][1], size))
            after = cost.cpu(tools[name], host)
            for kind, value in after.items():
                bulk_cpu[name][kind] = bulk_cpu[name].get(kind, 0.0) + value - before.get(kind, 0.0)
    queries, gigabytes = len(rtt[RESUMABLE]), 2 * plan.back_transfer_runs * size / 1e9
    return {"rtt_us": rtt, "client_rtt_us": client_rtt, "cpu_us_per_query": {name: {k: v * 1e6 / queries for k, v in per.items()} for name, per in cpu.items()},
            "transfer_mb_s": transfer, "mb": plan.back_mb, "cpu_s_per_gb": {name: {k: v / gigabytes for k, v in per.items()} for name, per in bulk_cpu.items()}}


@dataclass
class BackRounds:
    """When each fault of a kind struck and ended, inside the container, and where autossh's two
    logs (ssh's stderr, its own) ended at each fault and at the end."""

    start: float  # the loops answering, before the first fault
    autossh_logs: tuple[Path, Path]
    faults: list[float] = field(default_factory=list)
    releases: list[float] = field(default_factory=list)  # freezes: the kill that ended each
    marks: list[tuple[int, int]] = field(default_factory=list)
    end: float = 0.0


def log_ends(paths: tuple[Path, Path]) -> tuple[int, int]:
    first, second = (path.stat().st_size if path.exists() else 0 for path in paths)
    return first, second


def back_rounds(host: SshHost, plan: Plan, loops: list[back.Loop], freeze: bool, autossh_logs: tuple[Path, Path]) -> BackRounds:
    """Each round: kill the SSH sessions (or freeze them for outage_s, then kill them: the frozen
    session holds its listening port until then), then wait for every loop's next answer."""
    rounds = BackRounds(time.monotonic(), autossh_logs)
    reps = plan.back_freezes if freeze else plan.back_kills
    for rep in range(reps):
        rounds.marks.append(log_ends(autossh_logs))
        sessions = host.pids("sshd: gamer")
        if freeze:
            rounds.faults.append(back.signal_sessions(host, "STOP", sessions))
            time.sleep(plan.outage_s)  # the fault's length: the frozen session holds its port
            rounds.releases.append(back.signal_sessions(host, "KILL", sessions))
            until = rounds.releases[-1] + plan.stall_cap_s
        else:
            rounds.faults.append(back.signal_sessions(host, "KILL", sessions))
            until = rounds.faults[-1] + plan.kill_cap_s
        while True:  # the loops' logs say when each answered
            recovered = {name: log.first_answer_sent_after(rounds.faults[-1]) for name, log in back.read_all(loops).items()}
            if time.monotonic() > until or None not in recovered.values():
                break
            time.sleep(0.1)
        say(f"back {'freeze' if freeze else 'kill'} {rep + 1}/{reps}: " + ", ".join(f"{k} {report.seconds(v)}" for k, v in recovered.items()))
        time.sleep(plan.kill_spacing_s)  # the scenario's spacing between faults
    rounds.end = time.monotonic()
    rounds.marks.append(log_ends(autossh_logs))
    return rounds


def rounds_summary(rounds: BackRounds, logs: dict[str, back.LoopLog], plan: Plan, freeze: bool) -> dict[str, Any]:
    """Per tool and round: recovery (none past the round's cap, as the wait for it), failed queries,
    new connections; for autossh, ssh's refusals of a port still held and its restarts, from the
    slices of its logs between the faults."""
    cap = plan.stall_cap_s if freeze else plan.kill_cap_s
    out: dict[str, Any] = {name: back.summarise(log, rounds.faults, rounds.start, rounds.end, cap, rounds.releases if freeze else None) for name, log in logs.items()}
    stderr, own_log = (path.read_bytes().decode(errors="replace") if path.exists() else "" for path in rounds.autossh_logs)
    slices = list(zip(rounds.marks, rounds.marks[1:]))
    out["autossh"]["held_port_refusals"] = [stderr[a[0] : b[0]].count(HELD) for a, b in slices]
    out["autossh"]["ssh_starts"] = [own_log[a[1] : b[1]].count("starting ssh") for a, b in slices]
    if freeze:
        out["release_after_s"] = [release - fault for fault, release in zip(rounds.faults, rounds.releases)]
    return out


def answering(host: SshHost, loops: list[back.Loop], since: float, what: str) -> None:
    wait_for(lambda: all(log.first_answer_sent_after(since) is not None for log in back.read_all(loops).values()), 30, what)


def back_section(bed: Bed, plan: Plan) -> dict[str, Any]:
    """A client on the gaming PC reaching the laptop's MariaDB: round trips and transfers against
    `ssh -R`, then query loops through SSH sessions killed, and then frozen while they hold the
    port, against autossh -R, all on one container."""
    from tests.e2e.mariadb import start_mariadb

    load = [os.getloadavg()[0]]  # how busy the machine was, beside figures a busy machine moves
    database = start_mariadb()  # in this thread: the server dies with the thread that started it (PR_SET_PDEATHSIG)
    sink = back.SourceSink()
    try:
        host = bed.host("back-pc")
        back.install(host)
        tools = back_tools(bed, plan, host, database.port, sink.port, with_ssh=True)
        modes = {name: back_status(tools[name])["mode"] for name in (RESUMABLE, PLAIN)}
        data = back_data(host, plan, tools, database.port)
        say("back: SELECT 1 p50 " + ", ".join(f"{k} {probes.median(v):.0f} µs" for k, v in data["rtt_us"].items()))
        tools.pop("ssh -R").stop()  # plain ssh -R ends at the first fault: not in the rounds
        loops = [back.Loop(host, name, BACK_PORTS[name][0], plan.query_gap_s, plan.query_deadline_s, plan.query_retry_s) for name in (RESUMABLE, PLAIN, "autossh")]
        answering(host, loops, 0.0, "the query loops' first answers")

        def statuses() -> dict[str, Any]:
            return {name: back_status(tools[name]) for name in (RESUMABLE, PLAIN)}

        before = statuses()
        kills = back_rounds(host, plan, loops, False, reverse_logs(tools["autossh"], bed.work, host.alias))
        between = statuses()
        # A fresh autossh for the freezes, so that they do not inherit the back-off the kills led it into.
        tools["autossh"].stop()
        tools["autossh"] = bed.keep(start_reverse(host, plan.keepalive, [(BACK_PORTS["autossh"][0], database.port)], autossh=True, log_dir=bed.work, tag="freeze"))
        answering(host, loops, time.monotonic(), "the query loop through the new autossh")
        freezes = back_rounds(host, plan, loops, True, reverse_logs(tools["autossh"], bed.work, host.alias, tag="freeze"))
        after = statuses()
        for loop in loops:
            loop.stop()
        logs = back.read_all(loops)
        faults = {"kill": rounds_summary(kills, logs, plan, False), "freeze": rounds_summary(freezes, logs, plan, True)}
        load.append(os.getloadavg()[0])
        return {**data, "modes": modes, "faults": faults, "status_before": {"kill": before, "freeze": between}, "status": {"kill": between, "freeze": after},
                "load_average": load}
    finally:
        sink.close()
        database.stop()


# --- 9. transports -------------------------------------------------------------------------

# `up` on each kind of SSH server (tests/testbed.py HOST_KINDS), and on a default OpenSSH with the
# stdio transport forced: (host kind, up's options). The first is the reference of the others.
TRANSPORT_UPS: dict[str, tuple[str, tuple[str, ...]]] = {
    "openssh": ("openssh", ()),
    "openssh --transport stdio": ("openssh", ("--transport", "stdio")),
    "dropbear": ("dropbear", ()),
    "hardened": ("hardened", ()),
}
FORWARD, STDIO = "gt-remote forward", "gt-remote stdio"  # the default OpenSSH host, each transport


DROPBEAR_WINDOW = 1024 * 1024  # Dropbear's -W: its receive window per channel (24576 bytes unless given)


def dropbear_with_window(window: int) -> list[str]:
    """The test bed's Dropbear command with `-W window`: the lever for what the laptop may send
    before Dropbear's window adjust comes back."""
    command = list(DROPBEAR)
    command[-1] = command[-1].replace("exec /usr/sbin/dropbear ", f"exec /usr/sbin/dropbear -W {window} ", 1)
    if command == DROPBEAR:
        raise RuntimeError("bench: tests/testbed.py's DROPBEAR no longer runs 'exec /usr/sbin/dropbear ...': give -W there")
    return command


def transport_hosts(bed: Bed) -> dict[str, SshHost]:
    """One container per kind of SSH server (and a Dropbear with a larger receive window), started
    at once (each waits for its server)."""
    hosts: dict[str, SshHost] = {}
    failures: list[BaseException] = []
    starts: dict[str, dict[str, Any]] = {
        "openssh": {"alias": "transport-pc"},
        "dropbear": {"alias": "transport-dropbear-pc", "kind": "dropbear"},
        "dropbear-w": {"alias": "transport-dropbear-w-pc", "kind": "dropbear", "command": dropbear_with_window(DROPBEAR_WINDOW)},
        "hardened": {"alias": "transport-hardened-pc", "kind": "hardened"},
    }

    def start(name: str) -> None:
        try:
            options = dict(starts[name])
            hosts[name] = bed.host(options.pop("alias"), **options)
        except BaseException as exc:  # re-raised below, in the main thread
            failures.append(exc)

    threads = [threading.Thread(target=start, args=(name,)) for name in starts]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.join()
    finally:  # a Ctrl-C meanwhile: the containers still starting are the run's too, and go with it
        for thread in threads:
            thread.join()
    if failures:
        raise failures[0]
    return hosts


def transport_status(gt: Gt, alias: str) -> dict[str, Any]:
    """What `status --json` says of a tunnel's transport, and its supervisor."""
    [row] = gt.status(alias)
    return {key: row.get(key) for key in ("transport", "transport_reason", "resumable", "resumable_reason", "supervisor_pid")}


def cold_remote(host: SshHost) -> None:
    """Nothing of gt-remote's running or installed on the remote, as before a first `up`: what
    `down --stop-server` left (a server another alias of the same container started, a relay
    still exiting) is ended by pid, inside the container, and the uploaded builds removed."""
    leftover = host.pids("[r]elay_agent.py --socket") + host.pids("[c]cmux-server --listen")
    if leftover:
        host.exec("kill -KILL " + " ".join(str(pid) for pid in leftover) + " 2>/dev/null")
    host.sh("rm -rf /home/gamer/.local/share/gt-remote")


def transport_ups(bed: Bed, plan: Plan, hosts: dict[str, SshHost], config: Path) -> tuple[dict[str, Any], dict[str, Tunnel]]:
    """`up`, cold (nothing of gt-remote's on the remote: the server and the relay uploaded and
    started) then warm (the server running), for each case in turn, every round: the cases see
    the same machine's load. Each is taken down before the next, but for the last round's warm
    ones: they stay up, the tunnels of the round trips and throughput (a tunnel of its own per case).
    Without plan.transport_cold (the smoke run) each round has only the warm `up`."""
    gt = bed.gt
    states = ("cold", "warm") if plan.transport_cold else ("warm",)
    times: dict[str, dict[str, list[float]]] = {case: {state: [] for state in states} for case in TRANSPORT_UPS}
    steps: dict[str, dict[str, list[list[tuple[float, str]]]]] = {case: {state: [] for state in states} for case in TRANSPORT_UPS}
    seen: dict[str, dict[str, Any]] = {}
    kept: dict[str, Tunnel] = {}
    for rep in range(plan.transport_up_reps):
        last = rep == plan.transport_up_reps - 1
        for case, (kind, options) in TRANSPORT_UPS.items():
            host = hosts[kind]
            alias = f"{host.alias}-stdio" if options else host.alias
            ssh_config = config if kind == "openssh" else host.ssh_config
            port = free_loopback_port()
            up = ["up", alias, "--local", f"tcp://127.0.0.1:{port}", "--server-binary", str(STANDIN), *options]
            if plan.transport_cold:
                gt("down", alias, "--stop-server", ssh_config=ssh_config)
                cold_remote(host)
            for state in states:
                started = time.perf_counter()
                run = up_with_steps(gt, ssh_config, up)
                times[case][state].append(time.perf_counter() - started)
                steps[case][state].append([(t, report.step_name(line, alias)) for t, line in run])
                seen[case] = transport_status(gt, alias)
                if last and state == "warm":
                    kept[case] = bed.keep(wait_ready(Tunnel(case, port, supervisor_pid=seen[case]["supervisor_pid"], gt=gt, host=alias)))
                else:
                    gt("down", alias, ssh_config=ssh_config)
        say(f"transport up rep {rep + 1}/{plan.transport_up_reps}: " + ", ".join(
            f"{case} " + "/".join(f"{v[state][-1]:.2f}" for state in states) + " s" for case, v in times.items()))
    for case, (kind, options) in TRANSPORT_UPS.items():
        wanted = "forward" if kind == "openssh" and not options else "stdio"
        if seen[case]["transport"] != wanted or not seen[case]["resumable"]:
            raise RuntimeError(f"bench: `up` ({case}) ran with transport {seen[case]['transport']!r} "
                               f"(resumable: {seen[case]['resumable']}), not resumable over {wanted}: {seen[case]}")
    return {"seconds": times, "steps": steps, "status": seen}, kept


# The round trips' paths: (host, the case of TRANSPORT_UPS whose last `up` is the tunnel, or None:
# started here, `ssh -L` or gt-remote). The default OpenSSH's two transports and `ssh -L` to the
# same server; then, figures only, the hosts that leave only the stdio transport, and `ssh -L`
# through the same Dropbear.
TRANSPORT_PATHS: dict[str, tuple[str, str | None]] = {
    FORWARD: ("openssh", "openssh"),
    STDIO: ("openssh", "openssh --transport stdio"),
    "ssh -L": ("openssh", None),
    "dropbear (stdio)": ("dropbear", "dropbear"),
    f"dropbear -W {DROPBEAR_WINDOW} (stdio)": ("dropbear-w", None),
    "ssh -L (dropbear)": ("dropbear", None),
    "hardened (stdio)": ("hardened", "hardened"),
}


def transport_data(bed: Bed, plan: Plan, hosts: dict[str, SshHost], kept: dict[str, Tunnel]) -> dict[str, Any]:
    """Ping round trips and echo throughput through each transport on the default OpenSSH
    host, with `ssh -L` to the same server, and through the stdio transport where sshd leaves
    no choice; interleaved in rounds, the CPU of the processes on each path counted across its
    own turns (the others idle meanwhile, as in the back section)."""
    tunnels: dict[str, Tunnel] = {}
    for name, (host, case) in TRANSPORT_PATHS.items():
        if case is not None:
            tunnels[name] = kept[case]
        elif name.startswith("ssh -L"):
            tunnels[name] = bed.keep(start_plain_ssh(hosts[host], 5.0))
        else:
            tunnels[name] = bed.keep(start_gt_remote(bed.gt, hosts[host], 5.0, name=name))
    host_of = {name: hosts[host] for name, (host, _) in TRANSPORT_PATHS.items()}
    status = {name: transport_status(bed.gt, tunnel.host) for name, tunnel in tunnels.items() if tunnel.gt is not None}
    rtt: dict[str, list[float]] = {name: [] for name in tunnels}
    cpu: dict[str, dict[str, float]] = {name: {} for name in tunnels}

    def count(name: str, work: Callable[[], Any], into: dict[str, dict[str, float]]) -> Any:
        before = cost.cpu(tunnels[name], host_of[name])
        result = work()
        after = cost.cpu(tunnels[name], host_of[name])
        for kind, value in after.items():
            into[name][kind] = into[name].get(kind, 0.0) + value - before.get(kind, 0.0)
        return result

    rounds = 10
    for _ in range(rounds):
        for name, tunnel in tunnels.items():
            rtt[name] += count(name, lambda: asyncio.run(probes.ping_rtts(tunnel.port, max(1, plan.pings // rounds))), cpu)
    throughput: dict[str, list[float]] = {name: [] for name in tunnels}
    bulk: dict[str, dict[str, float]] = {name: {} for name in tunnels}
    for _ in range(plan.throughput_runs):
        for name, tunnel in tunnels.items():
            throughput[name].append(count(name, lambda: asyncio.run(probes.echo_throughput(tunnel.port, plan.frames)), bulk))
    pings, mib = len(rtt[FORWARD]), plan.throughput_runs * plan.frames
    return {"rtt_us": rtt, "throughput_mib_s": throughput, "status": status,
            "cpu_us_per_ping": {name: {k: v * 1e6 / pings for k, v in per.items()} for name, per in cpu.items()},
            "cpu_s_per_gib": {name: {k: v * 1024 / mib for k, v in per.items()} for name, per in bulk.items()}}


def transport_section(bed: Bed, plan: Plan) -> dict[str, Any]:
    """The stdio transport (#31) beside sshd's stream-local channels on the same default OpenSSH
    host: round trips and throughput; and `up` on Dropbear and on an OpenSSH under
    `DisableForwarding yes`, which leave only the stdio transport, against a default OpenSSH's."""
    load = [os.getloadavg()[0]]
    kept_from = len(bed.tunnels)
    hosts = transport_hosts(bed)
    openssh = hosts["openssh"]
    config = bed.work / f"{openssh.alias}-transports.ssh_config"  # a second alias, for the stdio transport on the same host
    config.write_text(openssh.config_block() + openssh.config_block().replace(f"Host {openssh.alias}", f"Host {openssh.alias}-stdio"))
    ups, kept = transport_ups(bed, plan, hosts, config)
    data = transport_data(bed, plan, hosts, kept)
    for name, path_status in data["status"].items():
        if path_status["transport"] != ("forward" if name == FORWARD else "stdio"):
            raise RuntimeError(f"bench: {name} ran over {path_status['transport']!r}: {path_status}")
    say("transport: " + ", ".join(f"{k} p50 {probes.median(v):.0f} µs" for k, v in data["rtt_us"].items()))
    for tunnel in bed.tunnels[kept_from:]:  # measured: they do not load the sections after this one
        tunnel.stop()
    load.append(os.getloadavg()[0])
    return {"up": ups, **data, "load_average": load}


# --- main -------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    import asyncssh

    def first_line(cmd: list[str]) -> str:
        result = subprocess.run(cmd, capture_output=True, text=True)
        return (result.stdout + result.stderr).strip().splitlines()[0] if (result.stdout + result.stderr).strip() else "?"

    return {
        "python": platform.python_version(),
        "asyncssh": asyncssh.__version__,
        "openssh": first_line(["ssh", "-V"]),
        "autossh": first_line(["autossh", "-V"]),
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores",
    }


Section = Callable[[Bed, Plan], Any]
SECTIONS: dict[str, tuple[str, str, Section]] = {  # --only name: (results key, what it does, function)
    "recovery": ("recovery", "recovery (kills and pauses, side by side)", recovery),
    "bring-up": ("bring_up", "bring-up", bring_up),
    "data": ("data_path", "data path", data_path),
    "scale": ("scale", "scale (memory and idle CPU per host)", scale),
    "attached": ("attached", "attached client (faults under long-lived connections, side by side)", attached),
    "cli": ("cli", "CLI (short commands beside import click)", cli_section),
    "cost": ("cost", "CPU cost per GiB and per 10,000 round trips", cost_section),
    "back": ("back", "back tunnels (a MySQL client on the gaming PC, the laptop's MariaDB; ssh -R and autossh -R)", back_section),
    "transport": ("transport", "transports (the stdio transport beside stream-local forwarding; up on Dropbear and a hardened OpenSSH)", transport_section),
}
ALIASES = {"memory": "scale", "bringup": "bring-up", "bring_up": "bring-up", "data-path": "data", "data_path": "data"}


def sections(only: str | None) -> list[str]:
    """`--only cli,memory` as section names, in the report's order; every section without it."""
    if not only:
        return list(SECTIONS)
    wanted = {ALIASES.get(name.strip(), name.strip()) for name in only.split(",") if name.strip()}
    unknown = wanted - set(SECTIONS)
    if unknown:
        raise SystemExit(f"bench: no section {', '.join(sorted(unknown))}; pick from {', '.join(SECTIONS)} (memory = scale)")
    return [name for name in SECTIONS if name in wanted]


def merged(report_json: Path, results: dict[str, Any], only: list[str]) -> dict[str, Any]:
    """The committed run with these sections replaced by (or added from) this run's, each
    marked as measured apart, with when and in how long; the plan gains this run's new fields."""
    base: dict[str, Any] = json.loads(report_json.read_text())
    base["plan"] = {**results["plan"], **base["plan"]}
    for name in only:
        key = SECTIONS[name][0]
        base[key] = results[key]
        base.setdefault("measured_apart", {})[key] = {"finished_at": results["finished_at"], "duration_s": results["duration_s"]}
    return base


def run(plan: Plan, out_dir: Path, only: list[str] | None = None, merge: bool = False) -> dict[str, Any]:
    bed = Bed.create()
    started = time.monotonic()
    try:
        results: dict[str, Any] = {"plan": plan.__dict__, "versions": versions()}
        if only and only != list(SECTIONS):
            results["sections"] = only
        for name in only or list(SECTIONS):
            key, title, section = SECTIONS[name]
            say(title)
            results[key] = section(bed, plan)
        results["duration_s"] = time.monotonic() - started
        results["finished_at"] = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    finally:
        bed.close()
    report.write(merged(out_dir / "benchmarks.json", results, only or list(SECTIONS)) if merge else results, out_dir)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="one repetition of everything")
    parser.add_argument("--out", type=Path, default=REPO / "docs", help="where benchmarks.md and the chart go")
    parser.add_argument("--only", metavar="SECTIONS", help=f"run only these, comma-separated: {', '.join(SECTIONS)} (memory = scale); "
                        "the report then has only them, so give --out a scratch directory")
    parser.add_argument("--merge", action="store_true", help="with --only: put these sections' results into the report in --out "
                        "(docs/ by default: its benchmarks.json, then benchmarks.md written again), the other sections kept as they are")
    args = parser.parse_args(argv)
    chosen = sections(args.only)
    if args.merge and (not args.only or args.smoke):
        raise SystemExit("bench: --merge adds the sections of --only to a full run's report, measured with the full plan (no --smoke)")
    if args.merge and not (args.out / "benchmarks.json").exists():
        raise SystemExit(f"bench: --merge needs a full run's {args.out / 'benchmarks.json'}")
    if args.only and not args.merge and args.out == REPO / "docs":
        raise SystemExit("bench: --only writes a partial report; pass --out DIR so docs/benchmarks.md keeps the full run, or --merge")
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupted)
    try:
        results = run(SMOKE if args.smoke else Plan(), args.out, chosen, merge=args.merge)
    except KeyboardInterrupt:
        say("interrupted; the containers and the scratch directories are gone, the report was not written")
        return 130
    say(f"done in {results['duration_s']:.0f} s; report in {args.out / 'benchmarks.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
