"""docs/benchmarks.md and the recovery chart, from one run's results."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.probes import median, percentile

CHART = "benchmarks-recovery.png"


def seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f}s"


def _finite(values: list[float | None]) -> list[float]:
    return [v for v in values if v is not None]


def _stat(values: list[float | None], cap: float) -> tuple[float, float, int]:
    """(median, p95, how many never recovered); a miss counts as the cap, a lower bound."""
    filled = [v if v is not None else cap for v in values]
    return median(filled), percentile(filled, 95), sum(v is None for v in values)


def _ratio(ours: float, reference: float) -> float:
    return ours / reference if reference else float("inf")


def summary(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per goal: our figure, the reference, the ratio, the goal, met or not (None:
    a figure without a goal). A run with --only has only its sections' rows."""
    plan = results["plan"]
    rows = []
    if "recovery" in results:
        rows += recovery_summary(results["recovery"], plan)
    if "bring_up" in results:
        bring = results["bring_up"]
        warm, warm_ref = median(bring["gt-remote warm"]), median(bring["openssh warm"])
        cold, cold_ref = median(bring["gt-remote cold"]), median(bring["openssh cold"])
        rows.append(_row("Warm `up` (server running), median", warm, warm_ref, "OpenSSH sequence", "≤ 1.0 ×", _ratio(warm, warm_ref) <= 1.0, "s"))
        rows.append(_row("Cold `up` (upload and start), median", cold, cold_ref, "OpenSSH sequence", "≤ 0.7 ×", _ratio(cold, cold_ref) <= 0.7, "s"))
    if "data_path" in results:
        rtt = results["data_path"]["rtt_us"]
        rows.append(_row("Ping RTT p50", median(rtt["gt-remote"]), median(rtt["ssh -L"]), "ssh -L", "≤ 1.2 ×", _ratio(median(rtt["gt-remote"]), median(rtt["ssh -L"])) <= 1.2, "µs"))
        tput = results["data_path"]["throughput_mib_s"]
        ours, ref = median(tput["gt-remote"]), median(tput["ssh -L"])
        rows.append(_row("Echo throughput, 1 MiB frames", ours, ref, "ssh -L", "≥ 0.8 ×", _ratio(ours, ref) >= 0.8, "MiB/s"))
    if "scale" in results:
        cpu = results["scale"]["cpu_percent"]
        rows.append(_row("Idle CPU per host", median(cpu["gt-remote"]), median(cpu["autossh + ssh"]), "autossh + ssh", "< 1 % of a core", max(cpu["gt-remote"]) < 1.0, "%"))
        rss = results["scale"]["rss_kib"]
        ours_mib, ref_mib = median(rss["gt-remote"]) / 1024, median(rss["autossh + ssh"]) / 1024
        rows.append(_row("Memory per idle host (RSS)", ours_mib, ref_mib, "autossh + ssh", "≤ 30 MiB", ours_mib <= 30.0, "MiB"))
        idle = results["scale"].get("remote_idle", {})
        if "gt-remote" in idle and "autossh + ssh" in idle:  # the load figures `pick` weighs included (#32)
            started = idle["gt-remote"]["processes_per_min"]
            rows.append(_row("Processes started per minute on an idle remote (health checks and load figures), relay", started,
                             idle["autossh + ssh"]["processes_per_min"], "autossh + ssh", "0", started == 0, "/min"))
    if "attached" in results:  # runs from before the attached-client section lack it
        rows += attached_summary(results["attached"], plan)
    if "cli" in results:
        rows += cli_summary(results["cli"])
    if "cost" in results:
        rows += cost_summary(results["cost"])
    if "back" in results:
        rows += back_summary(results["back"], plan)
    if "transport" in results:
        rows += transport_summary(results["transport"])
    return rows


def recovery_summary(recovery: dict[str, Any], plan: dict[str, Any]) -> list[dict[str, Any]]:
    kill, pause = recovery["kill"], recovery["pause"]
    rows = []
    gt_kill, auto_kill = _stat(kill["gt-remote"], plan["kill_cap_s"]), _stat(kill["autossh"], plan["kill_cap_s"])
    rows.append(_row("Recovery after a killed connection, median", gt_kill[0], auto_kill[0], "autossh", "≤ 0.5 × autossh", _ratio(gt_kill[0], auto_kill[0]) <= 0.5, "s"))
    worst_kill = max(v if v is not None else plan["kill_cap_s"] for v in kill["gt-remote"])
    rows.append(_row("Recovery after a killed connection, worst of all repeats", worst_kill, max(v if v is not None else plan["kill_cap_s"] for v in kill["autossh"]), "autossh", "every one < 1 s", worst_kill < 1.0, "s"))
    gt_pause, auto_pause = _stat(pause["gt-remote"], plan["pause_cap_s"]), _stat(pause["autossh"], plan["pause_cap_s"])
    rows.append(_row("Recovery after a pause, median (from the unpause)", gt_pause[0], auto_pause[0], "autossh", "≤ autossh", gt_pause[0] <= auto_pause[0], "s"))
    worst_pause = max(v if v is not None else plan["pause_cap_s"] for v in pause["gt-remote"])
    rows.append(_row("Recovery after a pause, worst", worst_pause, max(v if v is not None else plan["pause_cap_s"] for v in pause["autossh"]), "autossh", "< 1 s after the unpause", worst_pause < 1.0, "s"))
    return rows


# --- the CLI section ---------------------------------------------------------------------

CLICK, BARE = 'python -c "import click"', 'python -c "pass"'
CLI_WALL_GOAL, CLI_MEMORY_GOAL_MIB = 1.3, 20.0
PICK = "gt-remote pick"  # measured since #32; older runs lack it
IDLE_PLAIN = "gt-remote, plain (--no-resume)"  # the idle remote's cost without a relay (#32); older runs lack it


def _cli_names(cli: dict[str, Any]) -> tuple[str, str]:
    """The env and status commands as this run named them."""
    names = list(cli["wall_s"])
    return next(n for n in names if n.startswith("gt-remote env ")), "gt-remote status"


def cli_summary(cli: dict[str, Any]) -> list[dict[str, Any]]:
    wall, rss = cli["wall_s"], cli["maxrss_kib"]
    click_ms, click_mib = median(wall[CLICK]) * 1000, median(rss[CLICK]) / 1024
    rows = []
    named = list(zip(_cli_names(cli), ("`gt-remote env HOST`", "`gt-remote status`")))
    if PICK in wall:
        named.append((PICK, "`gt-remote pick`"))
    for name, shown in named:
        ms = median(wall[name]) * 1000
        rows.append(_row(f"{shown}, wall median", ms, click_ms, CLICK.replace('"', "'"), f"≤ {CLI_WALL_GOAL:g} ×", _ratio(ms, click_ms) <= CLI_WALL_GOAL, "ms"))
    for name, shown in zip(_cli_names(cli), ("`gt-remote env HOST`", "`gt-remote status`")):
        mib = median(rss[name]) / 1024
        rows.append(_row(f"{shown}, peak memory", mib, click_mib, CLICK.replace('"', "'"), f"≤ {CLI_MEMORY_GOAL_MIB:g} MiB", mib <= CLI_MEMORY_GOAL_MIB, "MiB"))
    return rows


def cli_markdown(cli: dict[str, Any]) -> list[str]:
    wall, rss = cli["wall_s"], cli["maxrss_kib"]
    click_ms = median(wall[CLICK]) * 1000
    out = [
        "",
        "## 6. CLI",
        "",
        f"What a new shell pays for `eval \"$(gt-remote env HOST)\"` in its rc file, and a prompt for `gt-remote status`: "
        f"{cli['reps']} runs of each command, interleaved with `python -c \"import click\"` (the floor of any click command "
        "line) and bare `python -c pass`, against a live tunnel so each command does its whole job. Wall time is spawn to "
        "exit; peak memory is the child's own maximum RSS (`ru_maxrss` from `wait4`). Python's bytecode cache is on, as "
        "in an installed package, and a discarded first run fills it.",
        "",
        "| command | wall median | wall p95 | / import click | peak memory (median) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name in wall:
        ms = median(wall[name]) * 1000
        out.append(f"| `{name}` | {ms:.0f} ms | {percentile(wall[name], 95) * 1000:.0f} ms | {ms / click_ms:.2f} | {median(rss[name]) / 1024:.1f} MiB |")
    env, status = _cli_names(cli)
    over = (median(wall[env]) - median(wall[CLICK])) * 1000
    out += [
        "",
        f"`gt-remote env` costs {over:.0f} ms more than importing click alone in this run. The commands that do not connect "
        "import neither asyncssh nor cryptography (nor asyncio, for `env` and `status`); tests/contracts/test_light_cli.py checks each "
        "command's imports.",
        "",
    ]
    if PICK in wall:
        out[-1:] = [f"`gt-remote pick` (#32) reads the figures every supervisor already keeps and writes a reservation under a lock: "
                    f"{(median(wall[PICK]) - median(wall[CLICK])) * 1000:.0f} ms more than importing click, with no SSH connection of its own.", ""]
    return out


# --- the cost section --------------------------------------------------------------------

LOCAL_KINDS = ("supervisor", "ssh")


def _total(per: dict[str, float], kinds: tuple[str, ...] | None = None) -> float:
    return sum(v for k, v in per.items() if kinds is None or k in kinds)


def _cost_ours(cost: dict[str, Any]) -> str:
    return RESUMABLE if RESUMABLE in cost["tools"] else PLAIN


def cost_summary(cost: dict[str, Any]) -> list[dict[str, Any]]:
    ours, ref = cost["tools"][_cost_ours(cost)], cost["tools"]["ssh -L"]
    return [
        _row("CPU per GiB echoed, every process of the path", _total(ours["per_gib"]), _total(ref["per_gib"]), "ssh + sshd", "figure only", None, "CPU s"),
        _row("CPU per 10,000 round trips, every process of the path", _total(ours["per_10k_round_trips"]), _total(ref["per_10k_round_trips"]), "ssh + sshd", "figure only", None, "CPU s"),
    ]


def cost_markdown(cost: dict[str, Any]) -> list[str]:
    out = [
        "",
        "## 7. CPU cost",
        "",
        "CPU seconds (user + sys, from each process's own `/proc/PID/stat`) spent carrying traffic, a figure the machine's "
        f"noise moves far less than wall-clock times: {cost['pings']} sequential Pings, then {cost['mib']} MiB echoed in 1 MiB "
        "frames (each byte goes through the tunnel and back), each tunnel alone on a container of its own so every sshd "
        "process there serves it. Local: gt-remote's supervisor, or ssh. In the container: the session's sshd processes "
        "and gt-remote's relay (resumable mode). The ccmux-server stand-in answering is the same for all and left out.",
        "",
        "| tunnel | per GiB: local | sshd | relay | gt-remote's own (supervisor + relay) | whole path | per 10k round trips: local | sshd | relay | gt-remote's own | whole path |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, tool in cost["tools"].items():
        cells = []
        for unit in ("per_gib", "per_10k_round_trips"):
            per = tool[unit]
            own = f"{_total(per, ('supervisor', 'relay')):.2f} s" if "supervisor" in per else "–"
            cells += [f"{_total(per, LOCAL_KINDS):.2f} s", f"{per.get('sshd', 0.0):.2f} s",
                      f"{per['relay']:.2f} s" if "relay" in per else "–", own, f"**{_total(per):.2f} s**"]
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    ours, ref = cost["tools"][_cost_ours(cost)], cost["tools"]["ssh -L"]
    gib, rt = _total(ours["per_gib"]), _total(ref["per_gib"])
    trips, trips_ref = _total(ours["per_10k_round_trips"]), _total(ref["per_10k_round_trips"])
    out += [
        "",
        f"{_cost_ours(cost)} spends {_ratio(gib, rt):.1f} × the CPU of `ssh -L` + sshd per GiB and {_ratio(trips, trips_ref):.1f} × "
        "per round trip, counting every process on both ends.",
        "",
    ]
    return out


def relay_hop_markdown(results: dict[str, Any]) -> list[str]:
    """What resumable mode's round trip costs beyond plain mode's, in CPU and in wall time:
    the figures behind the RTT goal of resumable mode, side by side."""
    tools = results["cost"]["tools"]
    if RESUMABLE not in tools or PLAIN not in tools:
        return []
    resumable, plain = tools[RESUMABLE]["per_10k_round_trips"], tools[PLAIN]["per_10k_round_trips"]
    relay_us = resumable.get("relay", 0.0) * 100  # CPU s per 10,000 round trips -> µs per round trip
    local_us = (resumable.get("supervisor", 0.0) - plain.get("supervisor", 0.0)) * 100
    text = (f"Per round trip, resumable mode's relay spends {relay_us:.0f} µs of CPU, and its supervisor {local_us:+.0f} µs "
            "against plain mode's: the relay is one more process on the path, woken twice per round trip, with a read "
            "and a write each time.")
    cost = results.get("attached", {}).get("cost", {}).get("rtt_us", {})
    if RESUMABLE in cost and PLAIN in cost:
        gap = median(cost[RESUMABLE]) - median(cost[PLAIN])
        text += (f" In section 5 the resumable round trip is {gap:.0f} µs longer than plain mode's: that CPU, and the "
                 "wake-ups of one more process on a busy machine. Meeting the RTT goal of resumable mode needs a path "
                 "without that process (ccmux-server keeping streams across reconnects itself, say). Reading "
                 "into one shared buffer in the relay, instead of asyncio's fresh 256 KiB object per read, was tried and did "
                 "not change its CPU per round trip. Work taken out of what both modes share (asyncssh's ignore "
                 "packets and its costlier chacha20-poly1305, section 3) makes this ratio larger, not smaller: plain mode "
                 "gets faster, and the gap, what the relay costs, stays.")
    return [text, ""]


# --- the bring-up breakdown --------------------------------------------------------------


def step_name(line: str, alias: str) -> str:
    """A step as `up -v` reports it, with what varies between runs (host, ports, paths, pids,
    details in parentheses) taken out, so the same step lines up across runs."""
    text = line.removeprefix("gt-remote: ")
    text = re.sub(r"\s*\([^)]*\)", "", text).replace(alias, "HOST")
    text = " ".join("…" if "/" in word else word for word in text.split())
    return re.sub(r"\d+", "N", text)[:90]


def step_table(runs: list[list[list[Any]]]) -> list[tuple[str, float, float]]:
    """(step, median arrival since the command started, median time since the step before),
    the steps in the order they first appeared."""
    arrivals: dict[str, list[float]] = {}
    gaps: dict[str, list[float]] = {}
    for run in runs:
        previous = 0.0
        for at, name in run:
            arrivals.setdefault(name, []).append(at)
            gaps.setdefault(name, []).append(at - previous)
            previous = at
    return [(name, median(arrivals[name]), median(gaps[name])) for name in arrivals]


def bring_up_markdown(bring: dict[str, Any]) -> list[str]:
    out = ["| case | median | p95 |", "| --- | --- | --- |"]
    for name in ("gt-remote warm", "gt-remote cold", "openssh warm", "openssh cold"):
        out.append(f"| {name} | {median(bring[name]):.3f} s | {percentile(bring[name], 95):.3f} s |")
    warm, warm_ref = median(bring["gt-remote warm"]), median(bring["openssh warm"])
    cold, cold_ref = median(bring["gt-remote cold"]), median(bring["openssh cold"])
    steps, start_up = bring.get("steps"), bring.get("start_up")
    if not steps or not start_up:  # runs from before the breakdown was measured
        return out
    command, imports = (median(values) for values in start_up.values())
    first = median([run[0][0] for run in steps["gt-remote warm"] if run])
    out += [
        "",
        f"Where `up` spends its time, from `gt-remote -v up` (each step as it reports it, timed as its line arrives; "
        f"medians over the runs). Warm `up` took {warm:.2f} s against {warm_ref:.2f} s for the OpenSSH sequence; "
        f"{first:.2f} s of it passed before the first step was reported: starting the `up` command ({command:.2f} s "
        f"on its own here, as `gt-remote --version`) and then its supervisor, whose imports (asyncssh and cryptography) "
        f"take {imports:.2f} s on their own (`python -c 'import gt_remote.runtime.supervisor'`). A C `ssh` pays none of that start-up. "
        + (f"Cold `up` took {cold:.2f} s against {cold_ref:.2f} s: one SSH connection does what the sequence does in five "
           "(check, mkdir, scp, start, forward), and it also installs and starts the relay, beside the server's start. "
           "What `up` does that the sequence does not: it learns the server's version (kept beside an uploaded build, "
           "so a warm `up` starts no program for it), checks who owns the port and renews its lease, all in the one "
           "bring-up script." if cold < cold_ref else
           f"Cold `up` took {cold:.2f} s against {cold_ref:.2f} s for the sequence's five connections."),
        "",
    ]
    for case in ("gt-remote warm", "gt-remote cold"):
        out += [f"**{case}** (step as `up -v` reports it; HOST, N and … stand for what varies):", "",
                "| step (the line that ends it) | arrives at | took (since the line before) |", "| --- | --- | --- |"]
        out += [f"| {name} | {at:.3f} s | {gap:.3f} s |" for name, at, gap in step_table(steps[case])]
        out.append("")
    return out


RESUMABLE, PLAIN = "gt-remote resumable", "gt-remote plain"
ATTACHED_TOOLS = (RESUMABLE, PLAIN, "autossh", "ssh -L")
FAULT_TITLES = {
    "kill": "the SSH session killed (the sshd processes serving it)",
    "pause": "the container paused for {outage_s:g} s, then resumed",
    "network": "the container's network disconnected for {outage_s:g} s, then reconnected",
    "sshd": "sshd restarted inside the container (every sshd killed, started again {sshd_down_s:g} s later)",
}


def _resets(attached: dict[str, Any], tool: str) -> int:
    return sum(sum(by_tool[tool]["resets"]) + by_tool[tool]["resets_before_faults"] for by_tool in attached["faults"].values())


def _worst_stall(attached: dict[str, Any], tool: str, cap: float) -> float:
    """The longest stall over every fault and round; a round with no answer counts as the cap."""
    return max(cap if v is None else v for by_tool in attached["faults"].values() for v in by_tool[tool]["stall_s"])


def attached_summary(attached: dict[str, Any], plan: dict[str, Any]) -> list[dict[str, Any]]:
    """The three goals of resumable streams, against plain mode; not met when resumable mode is missing."""
    cap, available = plan["stall_cap_s"], attached["resumable"]["available"]
    rtt = attached["cost"]["rtt_us"]
    plain_resets, plain_stall, plain_rtt = _resets(attached, PLAIN), _worst_stall(attached, PLAIN, cap), median(rtt[PLAIN])
    resets = _resets(attached, RESUMABLE) if available else None
    stall = _worst_stall(attached, RESUMABLE, cap) if available else None
    rtt_p50 = median(rtt[RESUMABLE]) if available else None
    throughput = attached["cost"]["throughput_mib_s"]
    plain_tput = median(throughput[PLAIN])
    tput = median(throughput[RESUMABLE]) if available else None
    return [
        _row("Attached client: resets over every fault and round", resets, plain_resets, PLAIN, "0", resets == 0, "resets"),
        _row("Attached client: worst stall after a fault ends", stall, plain_stall, PLAIN, "≤ 1 s", stall is not None and stall <= 1.0, "s"),
        _row("Resumable mode: Ping RTT p50", rtt_p50, plain_rtt, PLAIN, "≤ 1.15 × plain", rtt_p50 is not None and rtt_p50 <= 1.15 * plain_rtt, "µs"),
        _row("Resumable mode: echo throughput", tput, plain_tput, PLAIN, "≥ 0.8 × plain", tput is not None and tput >= 0.8 * plain_tput, "MiB/s"),
    ]


def _row(figure: str, ours: float | None, reference: float, against: str, goal: str, met: bool | None, unit: str) -> dict[str, Any]:
    ratio = None if ours is None else _ratio(ours, reference)
    return {"figure": figure, "ours": ours, "reference": reference, "against": against, "ratio": ratio, "goal": goal, "met": met, "unit": unit}


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "not available"
    if unit in ("resets", "queries"):
        return f"{value:.0f}"
    if unit == "s":
        return f"{value:.3f} s"
    if unit in ("µs", "ms"):
        return f"{value:.0f} {unit}"
    if unit == "CPU s":
        return f"{value:.2f} CPU s"
    return f"{value:.2f} {unit}"


def _recovery_table(name: str, data: dict[str, list[float | None]], cap: float) -> list[str]:
    lines = [f"| {name} | median | p95 | never within {cap:g} s | each repeat |", "| --- | --- | --- | --- | --- |"]
    for tool in ("gt-remote", "autossh", "ssh -L"):
        values = data[tool]
        med, p95, misses = _stat(values, cap)
        each = " ".join(seconds(v) for v in values)
        lines.append(f"| {tool} | {seconds(med) if _finite(values) else 'never'} | {seconds(p95) if _finite(values) else 'never'} | {misses} of {len(values)} | {each} |")
    return lines


def _default_mode(results: dict[str, Any]) -> str:
    """Which mode `gt-remote up` ran in for sections 1 to 4, where the run knows."""
    if "attached" not in results:
        return ""
    if results["attached"]["resumable"]["available"]:
        return " gt-remote ran in its default mode, resumable; section 5 compares it with plain mode."
    return " gt-remote ran in plain mode, the only one it had."


def markdown(results: dict[str, Any]) -> str:
    plan, v = results["plan"], results["versions"]
    rows = summary(results)
    goals = [row for row in rows if row["met"] is not None]
    met = sum(row["met"] for row in goals)
    out = [
        "# Benchmarks",
        "",
        f"Written by `make bench` on {results.get('finished_at') or f'{datetime.now(UTC):%Y-%m-%d %H:%M}'} UTC in {results['duration_s']:.0f} s. "
        f"Every figure was measured side by side with its reference in this one run, on the test bed's sshd containers "
        f"and the ccmux-server stand-in; this machine is noisy, so read the ratios, not the absolute times. "
        f"The numbers in the prose are computed from this run's data too (bench/report.py).",
        "",
        f"Machine: {v['machine']}; Python {v['python']}, asyncssh {v['asyncssh']}; {v['openssh']}; {v['autossh']}.",
        "",
    ]
    if results.get("sections"):
        out += [f"Sections run (`--only`): {', '.join(results['sections'])}; the others are not in this report.", ""]
    out += [
        f"## Summary: {met} of {len(goals)} goals met",
        "",
        "| figure | gt-remote | reference | ratio | goal | met |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        ratio = f"{row['ratio']:.2f}" if row["reference"] and row["ratio"] is not None else "n/a"
        verdict = "–" if row["met"] is None else "yes" if row["met"] else "**no**"
        out.append(f"| {row['figure']} | {_fmt(row['ours'], row['unit'])} | {_fmt(row['reference'], row['unit'])} ({row['against']}) | {ratio} | {row['goal']} | {verdict} |")
    if "recovery" in results:
        out += recovery_markdown(results["recovery"], plan)
    if "bring_up" in results:
        out += [
            "",
            "## 2. Bring-up",
            "",
            "Wall time from the command until a Ping through the local address is answered. `gt-remote up` (its exit includes the "
            "end-to-end Ping) against a hand-written OpenSSH sequence: `ssh` to check for the binary and a running server, `scp` it, "
            "`ssh` to start it with nohup, `ssh -N -L`, Ping. Warm: the server is already running. Cold: it must be uploaded and started.",
            "",
            *bring_up_markdown(results["bring_up"]),
        ]
    if "data_path" in results:
        out += data_path_markdown(results, plan)
    if "scale" in results:
        out += scale_markdown(results["scale"])
    if "attached" in results:
        out += attached_markdown(results["attached"], plan)
    if "cli" in results:
        out += cli_markdown(results["cli"])
    if "cost" in results:
        out += cost_markdown(results["cost"])
        out += relay_hop_markdown(results)
    if "back" in results:
        out += back_markdown(results["back"], plan, results.get("measured_apart", {}).get("back"))
    if "transport" in results:
        out += transport_markdown(results, plan)
    return "\n".join(out)


def recovery_markdown(recovery: dict[str, Any], plan: dict[str, Any]) -> list[str]:
    kill, pause = recovery["kill"], recovery["pause"]
    return [
        "",
        "## 1. Recovery",
        "",
        f"gt-remote `--keepalive {plan['keepalive']:g}` against autossh 1.4g `-M 0` with `ServerAliveInterval={plan['keepalive']:g}`, "
        f"`ServerAliveCountMax=3`, `ExitOnForwardFailure=yes`, `AUTOSSH_GATETIME=0` (the same detection budget), and plain "
        f"`ssh -N -L` with the same options. Time from the end of the fault until a Ping through the local address is answered. "
        f"{plan['reps']} repeats each; the two kinds of fault ran at once on two containers.",
        "",
        f"**(a) The sshd processes serving the connections killed** (all tunnels at once), repeats {plan['kill_spacing_s']:g} s after recovery:",
        "",
        *_recovery_table("killed connection", kill, plan["kill_cap_s"]),
        "",
        f"**(b) The container paused for {plan['pause_s']:g} s, then resumed:**",
        "",
        *_recovery_table("pause", pause, plan["pause_cap_s"]),
        "",
        "Plain `ssh -N -L` exits at the first fault and never recovers. autossh restarts ssh, but after five quick restarts it "
        "sleeps n²/3 × poll/100 s (poll 600 s) until an ssh has lived 10 s; a miss means no Pong within the cap, counted at the cap "
        "(a lower bound). gt-remote retries a loss after a working link at once, and keeps an attempt in flight during an outage, "
        "so it answers as soon as the peer does.",
        "",
        f"![recovery timelines]({CHART})",
    ]


def _connect_cell(connects: dict[str, list[float]] | None, name: str) -> str:
    """A table cell: the median time from connecting to the first Pong, where it was measured."""
    if not connects:
        return ""
    return f" {median(connects[name]) / 1000:.2f} ms |" if connects.get(name) else " |"


def _connects_line(connects: dict[str, list[float]] | None) -> str:
    if not connects:
        return ""
    count = len(next(iter(connects.values())))
    return (f" New connection + first Ping: {count} connections per path, each timed from its connect to the Pong of its "
            "first Ping (what a client that connects per request waits: a new channel, and in resumable mode the relay "
            "dialling the server).")


def data_path_markdown(results: dict[str, Any], plan: dict[str, Any]) -> list[str]:
    rtt, tput = results["data_path"]["rtt_us"], results["data_path"]["throughput_mib_s"]
    connects = results["data_path"].get("connect_us")
    out = [
        "",
        "## 3. Data path",
        "",
        f"{plan['pings']} sequential Pings per path (interleaved in rounds), and echo throughput with {plan['frames']} frames of "
        f"1 MiB in flight (the stand-in's echo message), median of {plan['throughput_runs']} runs. The unforwarded baseline is a "
        f"second stand-in published on a loopback port by Docker.{_default_mode(results)}{_connects_line(connects)}",
        "",
        "| path | RTT p50 | RTT p99 | throughput |" + (" new connection + first Ping, p50 |" if connects else ""),
        "| --- | --- | --- | --- |" + (" --- |" if connects else ""),
    ]
    for name in rtt:
        out.append(f"| {name} | {median(rtt[name]):.0f} µs | {percentile(rtt[name], 99):.0f} µs | {median(tput[name]):.1f} MiB/s |" + _connect_cell(connects, name))
    gap = median(rtt["gt-remote"]) - median(rtt["ssh -L"])
    out += [
        "",
        "What limits the data path: every message crosses one Python process, where asyncssh frames, encrypts and accounts "
        "for each SSH packet in Python around the C crypto; `ssh -L` does the same in C. Levers tried, measured with "
        "interleaved runs on this machine: forwarding protocol to protocol instead of through asyncio streams (adopted: "
        "a lower RTT ratio and more throughput); leaving out the empty SSH_MSG_IGNORE asyncssh sends before every packet, "
        "a countermeasure only CBC ciphers need (adopted for all other ciphers: one packet per message instead of two, "
        "measured side by side as about 30 µs less supervisor CPU and 15 to 45 µs less RTT per Ping); AES-GCM first "
        "instead of chacha20-poly1305 when the CPU has AES instructions and ssh_config sets no Ciphers (adopted: asyncssh "
        "makes three cipher objects per chacha20-poly1305 packet and one call per AES-GCM packet; side by side, about a "
        "fifth less supervisor CPU per round trip and a third more throughput; `ssh -L` keeps OpenSSH's default, "
        "chacha20-poly1305); uvloop, and a larger channel window and packet size (not adopted: no gain above this "
        "machine's noise). Counted in CPU seconds rather than wall time, a lever shows through the noise that hid "
        "AES-GCM's gain in an earlier, wall-clock-only trial. TCP_NODELAY is already set on both sockets by "
        "asyncio. A py-spy profile of the supervisor during sequential Pings found it mostly idle in epoll (not CPU-bound); "
        "the busy rest was mostly asyncssh's packet path and asyncio's socket transport, the forwarder's own callbacks a "
        f"small share. In this run gt-remote's median round trip is {gap:.0f} µs longer than `ssh -L`'s: a Python process's "
        "wake-up plus its per-packet work.",
    ]
    return out


def scale_markdown(scale: dict[str, Any]) -> list[str]:
    private = scale.get("private_kib")
    out = [
        "",
        "## 4. Scale",
        "",
        f"{scale['hosts']} hosts at once (one gt-remote supervisor per host, against one autossh + ssh pair per host), "
        f"keepalive 5 s on both, idle for {scale['idle_s']:g} s."
        + (" Private memory is what the processes hold for themselves (`Private_Clean` + `Private_Dirty` of "
           "/proc/PID/smaps_rollup): what one more host costs, since the rest of RSS is library pages that every "
           "supervisor shares." if private else ""),
        "",
        "| per host | median RSS |" + (" median private |" if private else "") + " median idle CPU |",
        "| --- | --- |" + (" --- |" if private else "") + " --- |",
    ]
    for name in scale["rss_kib"]:
        own = f" {median(private[name]) / 1024:.1f} MiB |" if private else ""
        out.append(f"| {name} | {median(scale['rss_kib'][name]) / 1024:.1f} MiB |{own} {median(scale['cpu_percent'][name]):.2f} % |")
    out += ["", "One tunnel holding N forwarded connections:", "", "| connections | " + " | ".join(scale["rss_with_connections_kib"]) + " |", "| --- | --- | --- |"]
    counts = list(next(iter(scale["rss_with_connections_kib"].values())))
    for count in counts:
        cells = [f"{scale['rss_with_connections_kib'][name][count] / 1024:.1f} MiB" for name in scale["rss_with_connections_kib"]]
        out.append(f"| {count} | " + " | ".join(cells) + " |")
    ours, ref = median(scale["rss_kib"]["gt-remote"]) / 1024, median(scale["rss_kib"]["autossh + ssh"]) / 1024
    floor = scale.get("import_rss_kib")
    out += ["", f"A supervisor holds {ours:.1f} MiB (RSS) against {ref:.1f} MiB for an autossh + ssh pair."]
    if floor:
        out[-1] += (f" Most of it is its base: a Python process that only imports the supervisor's modules (asyncssh, "
                    f"cryptography, asyncio) peaks at {median(floor['supervisor']) / 1024:.1f} MiB, bare Python at "
                    f"{median(floor['python']) / 1024:.1f} MiB.")
        if "supervisor_untrimmed" in floor:
            out[-1] += (f" With what the supervisor's process leaves out (Python's OpenSSL bindings, and asyncssh's X.509 "
                        f"support where pyOpenSSL is missing), the same imports peak at {median(floor['supervisor_untrimmed']) / 1024:.1f} MiB.")
    maps = scale.get("supervisor_rss_by_mapping_kib")
    if maps:
        out[-1] += " " + _where_memory_is(maps)
    held = scale["rss_with_connections_kib"]["gt-remote"]
    fewest, most = min(held, key=int), max(held, key=int)
    out[-1] += (f" Holding {most} connections instead of {fewest} adds {(held[most] - held[fewest]) / 1024:.1f} MiB to it. "
                "One supervisor process serving several hosts would share the base, at the price of one host's crash "
                "reaching the others.")
    out.append("")
    if "remote_idle" in scale:
        out += _remote_idle_lines(scale["remote_idle"])
    return out


def _remote_idle_lines(remote: dict[str, dict[str, float]]) -> list[str]:
    """What one idle tunnel costs the remote (the gaming PC), each tool alone on a container."""
    seconds = min(row["seconds"] for row in remote.values())
    out = [
        f"What one idle tunnel costs the remote, each tool alone on a container of its own with a server running, keepalive 5 s, "
        f"over {seconds:.0f} s: the processes (and threads) started there, from the last pid the container handed out, and "
        "the CPU of everything the container ran, from its cgroup (so processes that have already ended count too).",
        "",
        "| per idle tunnel, on the remote | processes started per minute | CPU (% of a core) |",
        "| --- | --- | --- |",
    ]
    out += [f"| {name} | {row['processes_per_min']:.1f} | {row['cpu_percent']:.3f} % |" for name, row in remote.items()]
    out += [
        "",
        "gt-remote's health check Pings the server through the relay each keepalive, asks its session count on the same "
        "stream, has the relay read the machine's load (/proc) for `pick`, and every third keepalive has it keep the lease; "
        "none of it starts a process. A shell (with the account's start-up files) and the small programs of the "
        "port-and-lease script run only without a relay, or when the relay cannot do its part"
        + (": the plain row, whose script reads the load figures too, with the shell's builtins." if IDLE_PLAIN in remote else "."),
        "",
    ]
    return out


def _where_memory_is(maps: dict[str, int]) -> str:
    """One idle supervisor's RSS by mapping, largest first: the anonymous part and the biggest files."""
    anonymous = maps.get("anonymous", 0)
    files = sorted(((kib, name) for name, kib in maps.items() if name != "anonymous"), reverse=True)
    named = ", ".join(f"{name} {kib / 1024:.1f} MiB" for kib, name in files[:4])
    rest = sum(kib for kib, _ in files[4:])
    return (f"Where one idle supervisor's RSS is (/proc/PID/smaps): {anonymous / 1024:.1f} MiB anonymous (Python's objects and "
            f"the code of every module it imported, asyncssh's modules the largest share), then mapped files: {named}, "
            f"and {rest / 1024:.1f} MiB in the rest. Almost none of it is the tunnel's own data. Levers tried and not adopted, "
            "for no gain above noise, were malloc_trim after bring-up, MALLOC_ARENA_MAX and PYTHONMALLOC=malloc; Python's -OO "
            "(no docstrings) takes off little. Adopted: the supervisor's process leaves out Python's own OpenSSL bindings "
            "(ssl and _hashlib, which load the system's libssl and libcrypto; asyncssh's crypto goes through the cryptography "
            "package, which carries its own), and asyncssh's X.509 support where it cannot load for want of pyOpenSSL. What "
            "is left is asyncssh, cryptography and asyncio themselves; no per-process lever reaches the goal.")


def _status_lines(by_tool: dict[str, Any]) -> list[str]:
    """What gt-remote's own `status --json` counted over the rounds, where it counts streams."""
    lines = []
    for tool in (RESUMABLE, PLAIN):
        status = by_tool.get(tool, {}).get("status") or {}
        if "streams_resumed" in status:
            lines.append(f"{tool}, by its `status --json` afterwards: {status.get('reconnects', 0)} reconnects, "
                         f"{status['streams_resumed']} streams resumed, {status.get('bytes_replayed', 0)} bytes replayed.")
    return [" ".join(lines), ""] if lines else []


def attached_markdown(attached: dict[str, Any], plan: dict[str, Any]) -> list[str]:
    cap, resumable = plan["stall_cap_s"], attached["resumable"]
    out = [
        "## 5. Attached client",
        "",
        "What a long-lived client such as the ccmux TUI or an MCP bridge sees. Through each tunnel, one client keeps one TCP "
        f"connection open and sends a Ping and a numbered 4 KiB echo frame in turn, one request in flight, {plan['request_gap_s'] * 1000:g} ms "
        f"apart, each with a {plan['request_deadline_s']:g} s deadline. A **reset** is the loss of a connection that had been answering "
        "(EOF, ECONNRESET or any connection error, a request past its deadline, or a wrong answer); the client then reconnects, so "
        "measuring goes on. The **stall** is the time from the moment the fault is lifted (right after the kill, the unpause, the "
        f"network reconnect, sshd started again) to the client's next answered request; never = none within {cap:g} s. "
        f"{plan['attached_reps']} rounds of each fault; the four faults ran at once on four containers, every tool against the same "
        f"container, keepalive {plan['keepalive']:g} s for all (autossh and `ssh -L` as in section 1). gt-remote resumable is "
        "`gt-remote up`, plain is `gt-remote up --no-resume`. The last row of each table is when sshd's banner came back on "
        "its published port: a stall above it is the tunnel's own doing (noticing the loss, waiting to retry, the SSH "
        "handshake, reattaching the streams).",
        "",
    ]
    if not resumable["available"]:
        out += [f"**gt-remote resumable: not available** in this run: {resumable['why']}. Plain mode is what `gt-remote up` did.", ""]
    for fault, by_tool in attached["faults"].items():
        out += [f"**({fault}) {FAULT_TITLES[fault].format(**plan)}:**", "",
                "| tool | resets | rounds with a reset | worst stall | stall in each round | wrong answers |",
                "| --- | --- | --- | --- | --- | --- |"]
        for tool in ATTACHED_TOOLS:
            if tool not in by_tool:
                out.append(f"| {tool} | not available | | | | |")
                continue
            r = by_tool[tool]
            stalls = r["stall_s"]
            worst = "never" if None in stalls else seconds(max(stalls))
            resets = sum(r["resets"]) + r["resets_before_faults"]
            out.append(f"| {tool} | {resets} | {sum(n > 0 for n in r['resets'])} of {len(r['resets'])} | {worst} | "
                       f"{' '.join(seconds(v) for v in stalls)} | {r['wrong_answers']} |")
        floor = by_tool.get("sshd answers", {}).get("stall_s", [])
        if floor:
            out.append(f"| (sshd's banner back on its port) | | | {seconds(None if None in floor else max(floor))} | "
                       f"{' '.join(seconds(v) for v in floor)} | |")
        out += ["", *_status_lines(by_tool)]
    rtt, tput = attached["cost"]["rtt_us"], attached["cost"]["throughput_mib_s"]
    connects = attached["cost"].get("connect_us")
    plain_rtt, plain_tput = median(rtt[PLAIN]), median(tput[PLAIN])
    out += [
        "**What resumable mode costs**, on an idle tunnel before the faults: sequential Pings and echo throughput "
        f"({plan['pings']} Pings per path, {plan['frames']} frames of 1 MiB, as in section 3), through the same "
        f"container.{_connects_line(connects)}",
        "",
        "Resumable mode carries each stream through the relay on the remote (a Unix-socket channel to the relay, which "
        "holds the server connection, with sequence numbers and acknowledgements) instead of a channel straight to the "
        "server's TCP port.",
        "",
        "| path | RTT p50 | RTT p99 | throughput | RTT p50 / plain | throughput / plain |" + (" new connection + first Ping, p50 |" if connects else ""),
        "| --- | --- | --- | --- | --- | --- |" + (" --- |" if connects else ""),
    ]
    for name in (RESUMABLE, PLAIN, "ssh -L"):
        if name not in rtt:
            out.append(f"| {name} | not available | | | | |" + (" |" if connects else ""))
            continue
        out.append(f"| {name} | {median(rtt[name]):.0f} µs | {percentile(rtt[name], 99):.0f} µs | {median(tput[name]):.1f} MiB/s | "
                   f"{median(rtt[name]) / plain_rtt:.2f} | {median(tput[name]) / plain_tput:.2f} |" + _connect_cell(connects, name))
    out.append("")
    return out


# --- the back-tunnel section ---------------------------------------------------------------

SSH_R = "ssh -R"
BACK_TOOLS = (RESUMABLE, PLAIN, "autossh")


def _worst(values: list[float | None], cap: float) -> float:
    """The longest of a tool's recoveries; a round with no answer within the cap counts as the cap."""
    return max(cap if v is None else v for v in values)


def _back_failed(back: dict[str, Any], tool: str) -> int:
    """A tool's failed queries over every fault, and before the first."""
    return sum(sum(by_tool[tool]["failed"]) + by_tool[tool]["failed_before_faults"] for by_tool in back["faults"].values())


def _freeze_cap(plan: dict[str, Any]) -> float:
    return float(plan["outage_s"] + plan["stall_cap_s"])


def _held_through(freeze: dict[str, Any], tool: str) -> bool:
    """Did the tool answer again in every round while the frozen session still held its port?"""
    return all(v is not None and v < held for v, held in zip(freeze[tool]["recovery_s"], freeze["release_after_s"]))


def back_summary(back: dict[str, Any], plan: dict[str, Any]) -> list[dict[str, Any]]:
    rtt, tput = back["rtt_us"], back["transfer_mb_s"]
    ours, ref = median(rtt[RESUMABLE]), median(rtt[SSH_R])
    rows = [
        _row("Back tunnel: SELECT 1 from the gaming PC, round trip p50", ours, ref, "ssh -R", "≤ 1.5 ×", _ratio(ours, ref) <= 1.5, "µs"),
        _row("Back tunnel: SELECT 1 round trip p99", percentile(rtt[RESUMABLE], 99), percentile(rtt[SSH_R], 99), "ssh -R", "figure only", None, "µs"),
    ]
    for direction, words in (("to", "to the laptop"), ("from", "from the laptop")):
        ours, ref = median(tput[RESUMABLE][direction]), median(tput[SSH_R][direction])
        rows.append(_row(f"Back tunnel: {back['mb']} MB {words}", ours, ref, "ssh -R", "≥ 0.5 ×", _ratio(ours, ref) >= 0.5, "MB/s"))
    kill, freeze = back["faults"]["kill"], back["faults"]["freeze"]
    worst, worst_ref = _worst(kill[RESUMABLE]["recovery_s"], plan["kill_cap_s"]), _worst(kill["autossh"]["recovery_s"], plan["kill_cap_s"])
    rows.append(_row("Back tunnel: SSH session killed, worst time from the kill to the next answer", worst, worst_ref, "autossh -R", "< 1 s", worst < 1.0, "s"))
    failed = _back_failed(back, RESUMABLE)
    rows.append(_row("Back tunnel: failed queries over every kill and freeze", failed, _back_failed(back, "autossh"), "autossh -R", "0", failed == 0, "queries"))
    cap = _freeze_cap(plan)
    frozen, frozen_ref = _worst(freeze[RESUMABLE]["recovery_s"], cap), _worst(freeze["autossh"]["recovery_s"], cap)
    rows.append(_row("Back tunnel: SSH session frozen (its port held), worst time from the freeze to the next answer", frozen, frozen_ref, "autossh -R",
                     f"while the port is held (< {plan['outage_s']:g} s)", _held_through(freeze, RESUMABLE), "s"))
    return rows


def _cpu_cells(per: dict[str, float]) -> str:
    local = per.get("supervisor", per.get("ssh", 0.0))
    relay = f"{per['relay']:.0f} µs" if per.get("relay", 0.0) >= 0.5 else "–"
    return f"{local:.0f} µs | {per.get('sshd', 0.0):.0f} µs | {relay} | **{sum(per.values()):.0f} µs**"


def _back_rtt_lines(back: dict[str, Any], plan: dict[str, Any]) -> list[str]:
    rtt, client, cpu = back["rtt_us"], back.get("client_rtt_us", {}), back["cpu_us_per_query"]
    ref = median(rtt[SSH_R])
    out = [
        f"**(a) Round trips.** {plan['back_queries']} `SELECT 1` per path on one connection, interleaved in {plan['back_rounds']} rounds, timed "
        "inside the container by a small MySQL-protocol client in python3 (bench/back.py: the handshake as root without a password, then "
        "COM_QUERY and the whole result set read, as a client library does). It times the round trip alone; the column beside it is the same "
        "query through the real `mariadb` client, one process driven through pipes, which adds its parsing, its printing and two pipe hops to "
        "every query, the same on every path. Unforwarded is the same client on the laptop straight to the server: the floor every path "
        "shares. CPU per query is user + sys of each process on the path across the timed queries: the local end (gt-remote's supervisor, or "
        "ssh), the container's sshd session processes, gt-remote's relay. The other tools idle meanwhile; their keepalives and health "
        "checks are what the relay's column shows under `ssh -R`, the noise of these counts.",
        "",
        "| path | p50 | p99 | p50 / ssh -R | through the `mariadb` client, p50 | CPU per query: local | sshd | relay | whole tunnel |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in (RESUMABLE, PLAIN, SSH_R, "unforwarded"):
        via_client = f"{median(client[name]):.0f} µs" if client.get(name) else "–"
        cells = _cpu_cells(cpu[name]) if name in cpu else "– | – | – | –"
        out.append(f"| {name} | {median(rtt[name]):.0f} µs | {percentile(rtt[name], 99):.0f} µs | {median(rtt[name]) / ref:.2f} | {via_client} | {cells} |")
    ours, plain, floor = median(rtt[RESUMABLE]), median(rtt[PLAIN]), median(rtt["unforwarded"])
    res_cpu, plain_cpu, ref_cpu = cpu[RESUMABLE], cpu[PLAIN], cpu[SSH_R]
    verdict = "within" if ours <= 1.5 * ref else "over"
    out += [
        "",
        f"gt-remote's back round trip is {ours - ref:.0f} µs longer than `ssh -R`'s, {ours / ref:.2f} ×, {verdict} the goal of 1.5 × "
        f"(the server and the client take {floor:.0f} µs of every path, unforwarded). Where the difference goes: in plain mode, where sshd "
        f"listens as for `ssh -R` and only the laptop's end differs (gt-remote's supervisor, Python and asyncssh, in ssh's place), the round "
        f"trip is {plain - ref:+.0f} µs against `ssh -R`'s, and its local end spends {plain_cpu.get('supervisor', 0.0):.0f} µs of CPU per query "
        f"against ssh's {ref_cpu.get('ssh', 0.0):.0f} µs. The relay adds {ours - plain:+.0f} µs more: in resumable mode each query crosses "
        f"one more process on the gaming PC, the relay, which holds the client's connection and carries it as a stream (sequence numbers, "
        f"acknowledgements) over a Unix-socket channel, {res_cpu.get('relay', 0.0):.0f} µs of its CPU per query, woken once each way, "
        f"and the supervisor's stream end costs {res_cpu.get('supervisor', 0.0) - plain_cpu.get('supervisor', 0.0):+.0f} µs against plain "
        "mode's. A py-spy profile of the supervisor and of the relay during these round trips (sampled from outside at 500 Hz, "
        "15,000 queries) found each idle in epoll 80 to 86 % of the time: neither is CPU-bound. Of the busy rest, the largest share in "
        "both is the socket write that hands the query on (the send system call, which wakes the next process), then asyncssh's packet "
        "path and AES-GCM in the supervisor; the stream core's own work is a small share. So the round trip is the sum of its hops: each "
        "Python process on the path costs a wake-up, a turn of its event loop, a read and a write, and on a busy machine a wait for a "
        "core. `ssh -R`'s path is sshd and ssh, both C; resumable mode puts the supervisor in ssh's place and adds the relay: two Python "
        "processes, one on each end. The relay hop is "
        "the price of a connection that survives the SSH session, as for forward streams (sections 5 and 7).",
        "",
    ]
    return out


def _back_transfer_lines(back: dict[str, Any], plan: dict[str, Any]) -> list[str]:
    tput, cpu = back["transfer_mb_s"], back.get("cpu_s_per_gb", {})
    ref_to, ref_from = median(tput[SSH_R]["to"]), median(tput[SSH_R]["from"])
    out = [
        f"**(b) Transfers.** {back['mb']} MB (10⁶ bytes) each way on one connection, median of {plan['back_transfer_runs']} runs: the container "
        "writes to a sink on the laptop (timed to the sink's acknowledgement of the last byte) and reads from a source there, each after a "
        "first exchange, so the connection reaches the laptop before the clock starts. CPU per GB is counted as for the round trips, across "
        "both directions.",
        "",
        "| path | to the laptop | from the laptop | to / ssh -R | from / ssh -R |" + (" CPU per GB: local | sshd | relay | whole tunnel |" if cpu else ""),
        "| --- | --- | --- | --- | --- |" + (" --- | --- | --- | --- |" if cpu else ""),
    ]
    for name in (RESUMABLE, PLAIN, SSH_R):
        to, from_laptop = median(tput[name]["to"]), median(tput[name]["from"])
        cells = ""
        if cpu:
            per = cpu[name]
            relay = f"{per['relay']:.2f} s" if per.get("relay", 0.0) >= 0.005 else "–"
            cells = f" {per.get('supervisor', per.get('ssh', 0.0)):.2f} s | {per.get('sshd', 0.0):.2f} s | {relay} | **{sum(per.values()):.2f} s** |"
        out.append(f"| {name} | {to:.1f} MB/s | {from_laptop:.1f} MB/s | {to / ref_to:.2f} | {from_laptop / ref_from:.2f} |{cells}")
    if cpu:
        ours, plain, ref = median(tput[RESUMABLE]["from"]), median(tput[PLAIN]["from"]), ref_from
        out += [
            "",
            f"From the laptop, resumable mode moves {ours / ref:.2f} × what `ssh -R` does and {ours / plain:.2f} × what plain mode does; "
            f"its path spends {sum(cpu[RESUMABLE].values()):.2f} CPU s per GB against {sum(cpu[PLAIN].values()):.2f} s for plain mode and "
            f"{sum(cpu[SSH_R].values()):.2f} s for `ssh -R`, {cpu[RESUMABLE].get('relay', 0.0):.2f} s of it in the relay, which reads each "
            "frame from its Unix-socket channel and writes it to the client's TCP connection, keeping it until acknowledged. On a machine "
            "with two cores and other work, a bulk transfer is bound by the CPU of the processes on its path: one Python process more "
            "is what separates the two modes.",
        ]
    return [*out, ""]


def _times(count: int) -> str:
    return "Once" if count == 1 else f"{count} times"


def _each(values: list[float | None]) -> str:
    return " ".join(seconds(v) for v in values)


def _back_fault_lines(back: dict[str, Any], plan: dict[str, Any]) -> list[str]:
    kill, freeze = back["faults"]["kill"], back["faults"]["freeze"]
    out = [
        f"**(c) Faults under a query loop.** In the container, one loop per tool: the real `mariadb` client, one process and one "
        f"connection, sends `SELECT n` and waits for `n` before the next, {plan['query_gap_s'] * 1000:g} ms apart, with `--skip-reconnect` "
        "(its own reconnect, on by default, would hide a lost connection, and the session state lost with it, behind a new one). A query answered with an "
        f"error, or not within {plan['query_deadline_s']:g} s, is a failed query; the loop then starts a new client {plan['query_retry_s']:g} s "
        "later, as an application reconnects, so an outage costs a failed query per attempt. Recovery is the time from the fault, stamped "
        "inside the container right after the signal (on the monotonic clock the loop's log uses), to the answer of the first query sent after "
        "it. `ssh -R` is not in these rounds: it exits at the first fault. The kills came first, then the freezes, under the same loops.",
        "",
        f"**(kill)** {_times(plan['back_kills'])}, every SSH session's sshd processes SIGKILLed at once (the kernel closes their sockets, so "
        f"the gaming PC's port is free at once), the next {plan['kill_spacing_s']:g} s after every loop answered; never = no answer within "
        f"{plan['kill_cap_s']:g} s:",
        "",
        "| tool | recovery, each kill | worst | failed queries | kills with a failure | new connections | wrong answers | ssh starts |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for tool in BACK_TOOLS:
        r = kill[tool]
        starts = sum(r["ssh_starts"]) if "ssh_starts" in r else "–"
        out.append(f"| {tool} | {_each(r['recovery_s'])} | {seconds(None if None in r['recovery_s'] else max(r['recovery_s']))} | "
                   f"{sum(r['failed']) + r['failed_before_faults']} | {sum(n > 0 for n in r['failed'])} of {len(r['failed'])} | "
                   f"{sum(r['connections'])} | {sum(r['wrong'])} | {starts} |")
    out += [
        "",
        f"**(freeze)** {_times(plan['back_freezes'])}, the SSH sessions' sshd processes SIGSTOPped, then SIGKILLed {plan['outage_s']:g} s later. "
        "A frozen session keeps its listening socket, as a session whose network vanished does until sshd notices: a new `-R` for the same "
        "port fails until the kill frees it. autossh was started afresh before the freezes, so that they do not inherit the back-off "
        "the kills led it into. Recovery from the freeze, and from the kill that ends it; never = no answer within "
        f"{plan['stall_cap_s']:g} s of that kill:",
        "",
        "| tool | from the freeze, each | from the release, each | failed queries | new connections | ssh's \"remote port forwarding failed\" | ssh starts |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for tool in BACK_TOOLS:
        r = freeze[tool]
        held = sum(r["held_port_refusals"]) if "held_port_refusals" in r else "–"
        starts = sum(r["ssh_starts"]) if "ssh_starts" in r else "–"
        out.append(f"| {tool} | {_each(r['recovery_s'])} | {_each(r.get('after_release_s', []))} | {sum(r['failed']) + r['failed_before_faults']} | "
                   f"{sum(r['connections'])} | {held} | {starts} |")
    releases = freeze["release_after_s"]
    auto = freeze["autossh"]
    out += [
        "",
        f"In the freeze rounds autossh's ssh was refused the port {sum(auto['held_port_refusals'])} times (ssh's own words, \"remote port "
        f"forwarding failed for listen port\", counted in its stderr), and autossh started ssh {sum(auto['ssh_starts'])} times; the "
        f"kill freed the port {_each(releases)} after each freeze. gt-remote resumable "
        + ("answered again in every round while the frozen session still held the port: the relay, not sshd, holds the listener, and "
           "the client's connection is a stream that resumes on the new SSH connection. Its time from the freeze is the time a frozen "
           f"peer takes to be found dead (`--keepalive {plan['keepalive']:g}`: three keepalives unanswered), and a new connection."
           if _held_through(freeze, RESUMABLE) else
           "did not answer again before the frozen session was killed in every round (see the table).")
        + " Plain mode (`--no-resume`) retries its forward every second while the port is held, and its client's connection ends with the session.",
        "",
    ]
    out += _back_status_lines(back)
    return out


def _back_status_lines(back: dict[str, Any]) -> list[str]:
    """What gt-remote's `status --json` said about the resumable back tunnel over the fault rounds."""
    before, after = back.get("status_before"), back.get("status")
    if not before or not after:
        return []
    parts = []
    for fault in ("kill", "freeze"):
        b, a = before[fault][RESUMABLE], after[fault][RESUMABLE]
        parts.append(f"{fault}: {(a['reconnects'] or 0) - (b['reconnects'] or 0)} reconnects, {a['connections_total'] - b['connections_total']} "
                     f"connections dialled to the laptop's server during the rounds, {a['bytes_to_laptop'] - b['bytes_to_laptop']} bytes to the laptop")
    return [f"gt-remote resumable, by its `status --json` (mode {after['kill'][RESUMABLE]['mode']}): " + "; ".join(parts) + ".", ""]


def back_markdown(back: dict[str, Any], plan: dict[str, Any], apart: dict[str, Any] | None = None) -> list[str]:
    k = plan["keepalive"]
    out = [
        "",
        "## 8. Back tunnels",
        "",
        "A client on the gaming PC reaching a service on the laptop, as a polecat reaches the town's Dolt. The laptop runs a real "
        "MySQL-protocol server (MariaDB's mariadbd, started for the run as the tests start theirs, tests/e2e/mariadb.py); each tool makes "
        "the container's 127.0.0.1 port reach it. gt-remote resumable is `gt-remote up --back dolt:PORT:127.0.0.1:LOCAL` (the relay on the "
        "gaming PC holds the listener, each connection a resumable stream); gt-remote plain is `up --no-resume --back` (sshd's remote "
        f"forward). Against `ssh -N -R 127.0.0.1:PORT:127.0.0.1:LOCAL` and `autossh -M 0 -N -R` with `ServerAliveInterval={k:g}`, "
        f"`ServerAliveCountMax=3`, `ExitOnForwardFailure=yes` (gt-remote: `--keepalive {k:g}`), and `AUTOSSH_GATETIME=0` as in section 1.",
        "",
    ]
    if apart:
        out += [f"Measured in a run of its own (`python -m bench.run --only back --merge`) on {apart['finished_at']} UTC in "
                f"{apart['duration_s']:.0f} s, on the same machine with the same plan; the other sections are the full run's.", ""]
    if back.get("load_average"):
        start, end = back["load_average"]
        out += [f"The machine's load average (1 min) was {start:.1f} when this section started and {end:.1f} when it ended: round trips "
                "and recovery times grow with it, as every hop waits for a core.", ""]
    modes = back.get("modes", {})
    if modes.get(RESUMABLE) != "relay":
        out += [f"**gt-remote resumable ran in mode {modes.get(RESUMABLE)!r}, not through the relay**: its figures are not those of resumable back tunnels.", ""]
    return out + _back_rtt_lines(back, plan) + _back_transfer_lines(back, plan) + _back_fault_lines(back, plan)


# --- the transport section ------------------------------------------------------------------

FORWARD, STDIO = "gt-remote forward", "gt-remote stdio"
UP_REFERENCE = "openssh"  # `up` on a default OpenSSH: what the other servers' `up` is held to
UP_CASES = {  # TRANSPORT_UPS in bench/run.py: how the report names each
    "openssh": "default OpenSSH",
    "openssh --transport stdio": "default OpenSSH, `--transport stdio`",
    "dropbear": "Dropbear",
    "hardened": "OpenSSH, `DisableForwarding yes`",
}
UP_BAR_S, UP_BAR_FACTOR = 3.0, 3.0  # issue #31: under 3 s, and under 3 x a default OpenSSH's `up`
STDIO_RTT_GOAL, STDIO_TPUT_GOAL = 1.5, 0.5


def transport_summary(transport: dict[str, Any]) -> list[dict[str, Any]]:
    rtt, tput = transport["rtt_us"], transport["throughput_mib_s"]
    ours, ref = median(rtt[STDIO]), median(rtt[FORWARD])
    rows = [
        _row("Stdio transport: Ping RTT p50", ours, ref, "stream-local forwarding", f"≤ {STDIO_RTT_GOAL:g} ×", _ratio(ours, ref) <= STDIO_RTT_GOAL, "µs"),
        _row("Stdio transport: Ping RTT p99", percentile(rtt[STDIO], 99), percentile(rtt[FORWARD], 99), "stream-local forwarding", "figure only", None, "µs"),
    ]
    ours, ref = median(tput[STDIO]), median(tput[FORWARD])
    rows.append(_row("Stdio transport: echo throughput, 1 MiB frames (each way)", ours, ref, "stream-local forwarding", f"≥ {STDIO_TPUT_GOAL:g} ×",
                     _ratio(ours, ref) >= STDIO_TPUT_GOAL, "MiB/s"))
    seconds_ = transport["up"]["seconds"]
    for case in ("dropbear", "hardened"):
        for state in _up_states(seconds_):
            ours, ref = median(seconds_[case][state]), median(seconds_[UP_REFERENCE][state])
            rows.append(_row(f"`up` on {UP_CASES[case]} (stdio transport), {state}, median", ours, ref, f"{UP_CASES[UP_REFERENCE]}, {state}",
                             f"< {UP_BAR_S:g} s and < {UP_BAR_FACTOR:g} ×", ours < UP_BAR_S and _ratio(ours, ref) < UP_BAR_FACTOR, "s"))
    return rows


def _up_states(times: dict[str, Any]) -> list[str]:
    """The kinds of `up` this run timed: cold and warm (the smoke run: warm only)."""
    return [state for state in ("cold", "warm") if state in times[UP_REFERENCE]]


def _transport_cpu_cells(per: dict[str, float]) -> str:
    local = per.get("supervisor", per.get("ssh", 0.0))
    parts = [f"{local:.0f} µs", f"{per.get('sshd', 0.0):.0f} µs"]
    parts += [f"{per[kind]:.0f} µs" if per.get(kind, 0.0) >= 0.5 else "–" for kind in ("bridge", "relay")]
    return " | ".join(parts) + f" | **{sum(per.values()):.0f} µs**"


def _transport_data_lines(transport: dict[str, Any], plan: dict[str, Any]) -> list[str]:
    rtt, tput, cpu, gib = transport["rtt_us"], transport["throughput_mib_s"], transport["cpu_us_per_ping"], transport.get("cpu_s_per_gib", {})
    status = transport["status"]
    ref_rtt, ref_tput = median(rtt[FORWARD]), median(tput[FORWARD])
    out = [
        f"**(a) Round trips and throughput.** {plan['pings']} sequential Pings per path on one connection, interleaved in 10 rounds, and echo "
        f"throughput with {plan['frames']} frames of 1 MiB in flight (each byte goes through the tunnel and back, so the figure is the rate each "
        f"way), median of {plan['throughput_runs']} runs, as in section 3. gt-remote forward is `gt-remote up` on a default OpenSSH (streams "
        "in sshd's direct-streamlocal channels, one per stream, to the relay's socket); gt-remote stdio is `gt-remote up --transport stdio` "
        "on the same container (a second alias): every stream through the relay's bridge (`relay_agent.py --mux`) on one exec channel, "
        "multiplexed with a credit of 1 MiB per channel and direction. `ssh -L` is to the same server. The rows below it are figures "
        "only: the hosts that leave only the stdio transport (`up` chose it: the transport column is what `status --json` said), a "
        "Dropbear started with a larger receive window, and `ssh -L` through the same Dropbear. CPU per "
        "Ping is user + sys of each process on the path across its own Pings (the other tunnels idle meanwhile; their keepalives and "
        "health checks are what the bridge and relay columns show under `ssh -L`): the local end (gt-remote's supervisor, or ssh), the "
        "container's SSH server processes (Dropbear's on a Dropbear host), the bridge, the relay.",
        "",
        "| path | transport | RTT p50 | RTT p99 | p50 / forward | throughput | / forward | CPU per Ping: local | sshd | bridge | relay | whole path |"
        + (" CPU per GiB echoed |" if gib else ""),
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |" + (" --- |" if gib else ""),
    ]
    for name in rtt:
        way = status.get(name, {}).get("transport") or "–"
        out.append(f"| {name} | {way} | {median(rtt[name]):.0f} µs | {percentile(rtt[name], 99):.0f} µs | {median(rtt[name]) / ref_rtt:.2f} | "
                   f"{median(tput[name]):.1f} MiB/s | {median(tput[name]) / ref_tput:.2f} | {_transport_cpu_cells(cpu[name])} |"
                   + (f" {sum(gib[name].values()):.2f} s |" if gib else ""))
    stdio, forward = median(rtt[STDIO]), ref_rtt
    s_cpu, f_cpu = cpu[STDIO], cpu[FORWARD]
    out += [
        "",
        f"The stdio transport's round trip is {stdio - forward:+.0f} µs against stream-local forwarding's, {stdio / forward:.2f} × "
        f"(goal ≤ {STDIO_RTT_GOAL:g} ×), and it echoes {median(tput[STDIO]) / ref_tput:.2f} × as fast (goal ≥ {STDIO_TPUT_GOAL:g} ×). "
        f"Each Ping crosses one more process on the gaming PC, the bridge, which reads the multiplexer's frames from its stdin and writes "
        f"them to the relay's socket, and back: {s_cpu.get('bridge', 0.0):.0f} µs of its CPU per Ping; the supervisor spends "
        f"{s_cpu.get('supervisor', 0.0) - f_cpu.get('supervisor', 0.0):+.0f} µs and sshd {s_cpu.get('sshd', 0.0) - f_cpu.get('sshd', 0.0):+.0f} µs "
        "against forwarding's (sshd carries an exec channel's data through a pipe to the bridge instead of a socket to the relay).",
        "",
    ]
    out += _dropbear_lines(transport)
    return out


def _dropbear_lines(transport: dict[str, Any]) -> list[str]:
    """Through Dropbear: the stdio transport beside `ssh -L` through the same server, and with
    its receive window raised (-W), where the run has those paths."""
    tput = transport["throughput_mib_s"]
    widened = next((name for name in tput if name.startswith("dropbear -W ")), None)
    if "dropbear (stdio)" not in tput or "ssh -L (dropbear)" not in tput or widened is None:
        return []
    ours, ssh, wide = median(tput["dropbear (stdio)"]), median(tput["ssh -L (dropbear)"]), median(tput[widened])
    window = widened.split()[2]
    return [
        f"Through Dropbear the stdio transport echoes {ours:.1f} MiB/s, {ours / ssh:.2f} × `ssh -L` through the same Dropbear "
        f"({ssh:.1f} MiB/s). Dropbear's receive window is 24576 bytes per channel unless `-W` says otherwise: the laptop may send "
        "that much before Dropbear's window adjust comes back, so the exec channel that carries every stream runs in small "
        f"bursts, and the whole path spends {sum(transport['cpu_s_per_gib']['dropbear (stdio)'].values()):.1f} CPU s per GiB echoed "
        f"against {sum(transport['cpu_s_per_gib'][STDIO].values()):.1f} s through OpenSSH. The same Dropbear started with "
        f"`-W {window}` echoes {wide:.1f} MiB/s, {wide / ours:.2f} × as much: the lever is the server's own setting, advice for "
        "Dropbear's users. The multiplexer's own levers were tried apart from this run on the default OpenSSH, interleaved, each variant on a "
        "container of its own: its data frames at 16, 128 and 256 KiB instead of 64 KiB, and its credit returned in batches of a "
        "sixteenth or a half of the window instead of a quarter. None moved the throughput beyond this machine's noise (256 KiB frames "
        "won 13 of 24 paired rounds, and saved 3 % of the path's CPU per GiB), so the constants stay. A py-spy profile of the bridge "
        "during the echo found it idle in epoll 85 % of the time; the supervisor was the busy end, most of it in the socket writes "
        "of asyncssh's packets, as for forwarding.",
        "",
    ] if "cpu_s_per_gib" in transport else []


def _previous_default(results: dict[str, Any]) -> list[str]:
    """The default transport's figures here beside those sections 3 and 5 have (measured in
    the full run; before the stdio transport existed where this section was measured apart)."""
    transport = results["transport"]
    rtt, tput = transport["rtt_us"], transport["throughput_mib_s"]
    ours_rtt, ours_tput = median(rtt[FORWARD]), median(tput[FORWARD])
    ssh_rtt, ssh_tput = median(rtt["ssh -L"]), median(tput["ssh -L"])
    text = (f"**On a default OpenSSH nothing changes.** `up` without `--transport` chose stream-local forwarding there "
            f"(`status --json`: {transport['status'][FORWARD]['transport']}), and its figures in this section are a round trip of "
            f"{ours_rtt:.0f} µs, {ours_rtt / ssh_rtt:.2f} × `ssh -L`'s in the same rounds, and {ours_tput:.1f} MiB/s, "
            f"{ours_tput / ssh_tput:.2f} × `ssh -L`'s.")
    data = results.get("data_path")
    if data and "gt-remote" in data["rtt_us"] and "ssh -L" in data["rtt_us"]:
        d_rtt, d_ssh = median(data["rtt_us"]["gt-remote"]), median(data["rtt_us"]["ssh -L"])
        d_tput, d_tput_ssh = median(data["throughput_mib_s"]["gt-remote"]), median(data["throughput_mib_s"]["ssh -L"])
        apart = "transport" in results.get("measured_apart", {})
        when = f" of the full run ({results.get('finished_at')} UTC)" if apart else ""
        text += (f" Section 3{when}, measured the same way: {d_rtt:.0f} µs, {d_rtt / d_ssh:.2f} × `ssh -L`, and {d_tput:.1f} MiB/s, "
                 f"{d_tput / d_tput_ssh:.2f} × `ssh -L`. Read the ratios to `ssh -L`: the absolute times move with the machine's load.")
    return [text, ""]


def _transport_up_lines(transport: dict[str, Any], plan: dict[str, Any]) -> list[str]:
    up = transport["up"]
    times, status = up["seconds"], up["status"]
    states = _up_states(times)
    reps = len(times[UP_REFERENCE]["warm"])
    out = [
        f"**(b) `up`** on each kind of SSH server, {reps} rounds; in each, every case in turn, cold (`down --stop-server`, gt-remote's "
        "uploads removed: the server and the relay are uploaded and started) then warm (the server running). Wall time from the command "
        "until it exits (its end-to-end Ping answered), the stand-in as the server, as in section 2. Dropbear has no stream-local "
        "forwarding and the hardened OpenSSH refuses every forward: `up` must find that out from the server's own answer and take "
        f"the stdio transport. #31's bar: under {UP_BAR_S:g} s, and under {UP_BAR_FACTOR:g} × a default OpenSSH's `up` in the same run.",
        "",
        "| server | transport |" + "".join(f" {state} median | {state} worst | {state} / default |" for state in states),
        "| --- | --- |" + " --- | --- | --- |" * len(states),
    ]
    for case, shown in UP_CASES.items():
        cells = "".join(f" {median(times[case][state]):.3f} s | {max(times[case][state]):.3f} s | "
                        f"{median(times[case][state]) / median(times[UP_REFERENCE][state]):.2f} |" for state in states)
        out.append(f"| {shown} | {status[case]['transport']} |{cells}")
    own = median(times["openssh --transport stdio"]["warm"]) - median(times[UP_REFERENCE]["warm"])
    waits = {case: _ping_to_resumable(up["steps"][case]["warm"]) for case in UP_CASES} if "steps" in up else {}
    worst = max(max(times[case][state]) for case in ("dropbear", "hardened") for state in states)
    out += [
        "",
        f"The stdio transport's own cost at `up`, on the same default OpenSSH: {own * 1000:+.0f} ms warm, starting the bridge on its "
        "exec channel (a login shell, then python3 running the relay's file) before the first stream. The slowest `up` on Dropbear or the "
        f"hardened OpenSSH took {worst:.2f} s. Why each chose the stdio transport, by `status --json`: "
        + "; ".join(f"{UP_CASES[case]}: {status[case]['transport_reason']}" for case in ("dropbear", "hardened")) + ".",
        "",
    ]
    if waits and None not in waits.values():
        out[-2] += (" From `up -v`'s steps (warm, medians): from the server's answer (\"reusing the running ccmux-server\") to "
                    "\"connections are resumable\", " + ", ".join(f"{UP_CASES[case]} {value * 1000:.0f} ms" for case, value in waits.items() if value is not None)
                    + ". Dropbear is known by its version string, so its bridge starts without asking; the hardened OpenSSH is asked for a "
                    "channel to the relay's socket beside the first Ping, and only its refusal starts the bridge, one step after the other.")
    return out


def _ping_to_resumable(runs: list[list[list[Any]]]) -> float | None:
    """Median time from the step that ends the server's part of `up` to "connections are
    resumable" (the first stream through the transport); None where the steps are named otherwise."""
    gaps = []
    for run in runs:
        server = next((at for at, name in run if name.startswith(("reusing the running", "starting ccmux-server"))), None)
        resumable = next((at for at, name in run if name.startswith("connections are resumable")), None)
        if server is None or resumable is None:
            return None
        gaps.append(resumable - server)
    return median(gaps) if gaps else None


def transport_markdown(results: dict[str, Any], plan: dict[str, Any]) -> list[str]:
    transport = results["transport"]
    apart = results.get("measured_apart", {}).get("transport")
    out = [
        "",
        "## 9. Transports",
        "",
        "Where sshd opens no channel to the relay's socket (Dropbear; OpenSSH with `DisableForwarding yes` or "
        "`AllowStreamLocalForwarding no`), resumable streams go through the stdio transport: the relay's bridge on one exec channel "
        "per SSH connection (docs/resume.md, \"Transports\"). `up --transport stdio` forces it on any host, so it can be measured "
        "beside stream-local forwarding on the same default OpenSSH, in the same rounds.",
        "",
    ]
    if apart:
        out += [f"Measured in a run of its own (`python -m bench.run --only transport --merge`) on {apart['finished_at']} UTC in "
                f"{apart['duration_s']:.0f} s, on the same machine with the same plan; the other sections are the full run's.", ""]
    if transport.get("load_average"):
        start, end = transport["load_average"]
        out += [f"The machine's load average (1 min) was {start:.1f} when this section started and {end:.1f} when it ended.", ""]
    out += _transport_data_lines(transport, plan)
    out += _previous_default(results)
    out += _transport_up_lines(transport, plan)
    return out


def chart(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plan = results["plan"]
    figure, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for axis, (fault, cap, title) in zip(axes, (("kill", plan["kill_cap_s"], "killed connection"), ("pause", plan["pause_cap_s"], f"{plan['pause_s']:g} s pause"))):
        for tool, style in (("gt-remote", "o-"), ("autossh", "s--")):
            values = results["recovery"][fault][tool]
            reps = list(range(1, len(values) + 1))
            axis.plot(reps, [v if v is not None else cap for v in values], style, label=tool)
            misses = [(r, cap) for r, v in zip(reps, values) if v is None]
            if misses:
                axis.plot(*zip(*misses), "x", color="red", markersize=10, label=f"{tool}: none within {cap:g} s")
        axis.set_yscale("log")
        axis.set_title(f"Recovery after a {title}")
        axis.set_xlabel("repeat")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
    axes[0].set_ylabel("seconds until a Ping is answered")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write(results: dict[str, Any], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "benchmarks.md").write_text(markdown(results))
    (out_dir / "benchmarks.json").write_text(json.dumps(results, indent=1, default=str))
    if "recovery" in results:
        chart(results, out_dir / CHART)


def main() -> None:
    """Re-render the report from a run's JSON: python -m bench.report docs/benchmarks.json"""
    import sys

    source = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/benchmarks.json")
    write(json.loads(source.read_text()), source.parent)


if __name__ == "__main__":
    main()
