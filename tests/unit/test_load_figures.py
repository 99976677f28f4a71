"""A host's load figures (gt_remote/base/load.py) from what the remote reports: the relay's
load op (run here as the remote runs it, under Python 3.8) and the plain-mode script's
builtins-only reading (run here by sh), which must agree; and the rules that turn either into
`status`'s figures, a container's own CPU use included."""

from __future__ import annotations

import os
import subprocess
from typing import Any

import pytest

from gt_remote.base.load import Facts, LoadMeter, cpus_in_list, facts_from
from gt_remote.remote.load import LOAD_SCRIPT, load_fields
from gt_remote.remote.scripts import parse_fields
from tests.testbed import wait_for
from tests.unit.test_relay_agent import Relay, relay  # noqa: F401 (the fixture)


def script_facts() -> dict[str, str]:
    """LOAD_SCRIPT as plain mode runs it (under sh), on this machine."""
    result = subprocess.run(["sh", "-s"], input=LOAD_SCRIPT, capture_output=True, text=True, timeout=30, check=True)
    assert result.stderr == "", "the script keeps its errors to itself"
    return load_fields(parse_fields(result.stdout))


def proc_loadavg() -> float:
    with open("/proc/loadavg") as handle:
        return float(handle.read().split()[0])


def test_the_relays_load_op_reads_this_machine(relay: Relay) -> None:  # noqa: F811
    answer: dict[str, Any] = {}

    def read() -> bool:  # /proc/loadavg moves every 5 s: the same figure on both sides of the ask
        before = proc_loadavg()
        answer.update(relay.ask(op="load"))
        return before == answer.get("load_average") == proc_loadavg()

    wait_for(read, 30, "a load answer between two equal /proc/loadavg readings")
    assert answer["cpus"] == len(os.sched_getaffinity(0))
    with open("/proc/meminfo") as handle:
        meminfo = {line.split(":")[0]: int(line.split()[1]) for line in handle if line.startswith(("MemTotal:", "MemAvailable:"))}
    assert answer["mem_total_kb"] == meminfo["MemTotal"]
    assert 0 < answer["mem_available_kb"] <= answer["mem_total_kb"]
    in_container = os.path.exists("/.dockerenv") or os.path.exists("/run/.containerenv")
    assert bool(answer.get("container")) is in_container


def test_the_script_and_the_relay_give_the_same_figures(relay: Relay) -> None:  # noqa: F811
    found: dict[str, Facts] = {}

    def both() -> bool:
        found["relay"], found["script"] = facts_from(relay.ask(op="load")), facts_from(script_facts())
        return found["relay"].load_average == found["script"].load_average

    wait_for(both, 30, "the relay and the script to read the same load average")
    by_relay, by_script = found["relay"], found["script"]
    assert by_script.cpus == by_relay.cpus == len(os.sched_getaffinity(0))
    assert by_script.mem_total_kb == by_relay.mem_total_kb
    assert by_script.container == by_relay.container
    if by_relay.container:
        assert by_script.cgroup_cpu_s is not None and by_script.uptime_s is not None


def test_a_hello_for_the_load_op_takes_no_arguments(relay: Relay) -> None:  # noqa: F811
    assert "load_average" in relay.ask(op="load", extra="ignored")


@pytest.mark.parametrize(("text", "count"), [("0", 1), ("0-3", 4), ("0-3,8-11", 8), ("1,3,5", 3), (" 0-1\n", 2), ("3-1", None), ("", None), ("a-b", None), ("0-99999999", None)])
def test_a_cpu_list_is_counted(text: str, count: int | None) -> None:
    assert cpus_in_list(text) == count


def test_figures_from_the_relay_answer() -> None:
    facts = facts_from({"load_average": 1.5, "cpus": 4, "mem_total_kb": 16 * 1024 * 1024, "mem_available_kb": 4 * 1024 * 1024})
    figures = LoadMeter().figures(facts, 3, "relay")
    assert figures == {"sessions": 3, "cpu_load": 0.375, "cpu_from": "loadavg", "load_average": 1.5, "cpus": 4, "mem_available_mb": 4096, "mem_total_mb": 16384, "read_by": "relay"}


def test_figures_from_the_script_fields() -> None:
    facts = facts_from({"load_average": "0.50", "cpus_allowed": "0-1", "mem_total_kb": "2048000", "mem_available_kb": "1024000"})
    assert LoadMeter().figures(facts, 0, "script")["cpu_load"] == 0.25


@pytest.mark.parametrize(
    ("bad", "figure"),
    [({"load_average": "nan"}, "cpu_load"), ({"load_average": "-1"}, "cpu_load"), ({"load_average": "1e999"}, "cpu_load"), ({"load_average": True}, "cpu_load"),
     ({"load_average": "٣"}, "cpu_load"), ({"cpus": 0}, "cpus"), ({"cpus": "many"}, "cpus"), ({"mem_total_kb": -5}, "mem_total_mb"), ({"mem_total_kb": "12\x1b"}, "mem_total_mb")],
)
def test_a_figure_that_is_not_one_counts_as_unknown(bad: dict[str, Any], figure: str) -> None:
    figures = LoadMeter().figures(facts_from({"load_average": 1.0, "cpus": 2, "mem_total_kb": 1024, "mem_available_kb": 512, **bad}), None, "relay")
    assert figures[figure] is None


def test_in_a_container_the_cpu_load_is_its_own_use() -> None:
    """/proc/loadavg there is the host's: the container's cgroup counter says what it uses."""
    meter = LoadMeter()
    relayed = facts_from({"load_average": 7.0, "cpus": 2, "container": True, "cpu_busy": 1.0})
    assert meter.figures(relayed, 0, "relay")["cpu_load"] == 0.5
    first = facts_from({"load_average": "7.0", "cpus_allowed": "0-1", "container": "1", "uptime_s": "100.00", "cgroup_cpu_ns": "5000000000"})
    assert meter.figures(first, 0, "script")["cpu_load"] is None, "one reading is no rate"
    second = facts_from({"load_average": "7.0", "cpus_allowed": "0-1", "container": "1", "uptime_s": "102.00", "cgroup_cpu_ns": "8000000000"})
    figures = meter.figures(second, 0, "script")
    assert figures["cpu_load"] == 0.75 and figures["cpu_from"] == "cgroup"  # 3 CPU seconds in 2 s, over 2 CPUs
    restarted = facts_from({"cpus_allowed": "0-1", "container": "1", "uptime_s": "104.00", "cgroup_cpu_us": "10"})
    assert meter.figures(restarted, 0, "script")["cpu_load"] is None, "a counter that went back is a new container"


def test_memory_available_is_never_more_than_the_total() -> None:
    figures = LoadMeter().figures(facts_from({"mem_total_kb": 1024, "mem_available_kb": 4096}), 0, "relay")
    assert figures["mem_available_mb"] == figures["mem_total_mb"] == 1
