"""Several gaming PCs as one pool (#32): three real hosts, each with its own supervisor and
stand-in server, given different session counts (opened through each tunnel, as a client
would) and, on one, a CPU load (busy loops inside its container, started and ended by pid).
`pick` chooses by the figures the supervisors keep, `--json` says why, caps hold, `--for`
sticks, a host that goes away is named and `--move` leaves it, a host that comes back is used
again, and ten picks started at once spread over the hosts. The figures in `status` are the
remote's own: its /proc/loadavg, its CPUs and memory, its server's session count."""

from __future__ import annotations

import json
import secrets
import shlex
import socket
import struct
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Gt
from tests.helpers import exports
from tests.testbed import STANDIN, USER, SshHost, combined_ssh_config, wait_for

HOSTS = ("pc1", "pc2", "pc3")
OPEN_SESSION = 0x7FFF0002  # the stand-in's own message (tests/standin/ccmux-server-standin)
BUSY = "while True: pass"


def send_session(url: str, name: str) -> int:
    """Open a session named `name` on the server behind `url` (a tunnel's local address); the
    server's session count after it."""
    port = int(url.rsplit(":", 1)[1])
    body = struct.pack("<I", OPEN_SESSION) + struct.pack("<Q", len(name.encode())) + name.encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(struct.pack(">I", len(body)) + body)
        data = b""
        while len(data) < 51:
            chunk = conn.recv(100)
            assert chunk, "the server closed the connection"
            data += chunk
    return int(struct.unpack_from("<Q", data, 24)[0])


def server_sessions(host: SshHost) -> int:
    """The stand-in's session count, asked inside the container (GetServerStatus on its port)."""
    asker = (
        "import socket, struct\n"
        "s = socket.create_connection(('127.0.0.1', 9999))\n"
        "s.sendall(struct.pack('>I', 4) + struct.pack('<I', 15))\n"
        "data = b''\n"
        "while len(data) < 51: data += s.recv(100)\n"
        "print(struct.unpack_from('<Q', data, 24)[0])\n"
    )
    return int(host.sh(f"python3 -c {shlex.quote(asker)}", user=USER))


class Pool:
    """The three hosts up, each through its own tunnel, keepalive 1 s, and the config's tables."""

    def __init__(self, gt: Gt, hosts: dict[str, SshHost], config: Path) -> None:
        self.gt, self.hosts, self.config = gt, hosts, config

    def configure(self, tables: dict[str, dict[str, Any]]) -> None:
        lines = []
        for name, table in tables.items():
            lines.append(f"[hosts.{name}]")
            lines += [f"{key} = {json.dumps(value)}" for key, value in table.items()]
        self.config.write_text("\n".join(lines) + "\n")
        self.config.chmod(0o600)

    def load(self, name: str) -> dict[str, Any] | None:
        [row] = self.gt.status(name)
        return row.get("load") if row["state"] == "up" else None

    def loads(self) -> dict[str, dict[str, Any] | None]:
        return {row["host"]: row.get("load") if row["state"] == "up" else None for row in self.gt.status()}

    def pick(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.gt("--config", str(self.config), "pick", *args)

    def pick_json(self, *args: str) -> dict[str, Any]:
        result = self.pick(*args, "--json")
        return dict(json.loads(result.stdout))

    def picked(self, *args: str) -> str:
        """The host a pick chose, by the address its export lines carry."""
        result = self.pick(*args)
        assert result.returncode == 0, result.stderr
        address = exports(result.stdout)["GASTOWN_CCMUX_ADDR"]
        [name] = [name for name in self.hosts if self.gt.local(name) == address]
        return name

    def sessions(self, name: str, count: int) -> None:
        """Open sessions on `name`'s server until it holds `count`, then wait for its supervisor to see them."""
        for index in range(count):
            send_session(self.gt.local(name), f"s{index}")
        wait_for(lambda: (self.load(name) or {}).get("sessions") == count, 30, f"{name}'s figures to show {count} sessions")

    def busy(self, name: str, loops: int = 3) -> list[int]:
        """Busy loops inside `name`'s container; their pids."""
        host, marker = self.hosts[name], f"busy-{secrets.token_hex(4)}"
        for _ in range(loops):
            host.spawn(f"exec python3 -c {shlex.quote(BUSY)} {marker}")
        return list(wait_for(lambda: len(found := host.pids(marker)) == loops and found, 15, "the busy loops to run"))  # type: ignore[arg-type]

    def rest(self, name: str, pids: list[int]) -> None:
        for pid in pids:
            self.hosts[name].kill(pid)


@pytest.fixture
def pool(gt: Gt, host_factory: Any, tmp_path: Path) -> Pool:
    hosts = {name: host_factory(name) for name in HOSTS}
    gt.ssh_config = combined_ssh_config(tmp_path / "ssh_config", *hosts.values())
    for name in HOSTS:
        plain = ("--no-resume",) if name == "pc1" else ()  # pc1 in plain mode: its figures come from the health check's script
        result = gt("up", name, "--keepalive", "1", "--server-binary", str(STANDIN), *plain)
        assert result.returncode == 0, result.stderr
    found = Pool(gt, hosts, tmp_path / "pool.toml")
    found.configure({name: {"pool": True} for name in HOSTS})
    wait_for(lambda: all(found.loads().values()), 30, "every host's first load figures")
    return found


def proc_loadavg(host: SshHost) -> float:
    return float(host.sh("cat /proc/loadavg").split()[0])


def test_the_load_figures_in_status_are_the_remotes_own(pool: Pool) -> None:
    pool.sessions("pc1", 2)
    pool.sessions("pc2", 3)
    for name, way in (("pc1", "script"), ("pc2", "relay"), ("pc3", "relay")):
        host = pool.hosts[name]
        found: dict[str, Any] = {}

        def same_load_average() -> bool:  # /proc/loadavg moves every 5 s: a status between two equal readings
            before = proc_loadavg(host)
            found.update(pool.load(name) or {})
            return before == found.get("load_average") == proc_loadavg(host)

        wait_for(same_load_average, 30, f"{name}'s status to carry its /proc/loadavg")
        assert found["read_by"] == way, found
        assert found["sessions"] == server_sessions(host) == {"pc1": 2, "pc2": 3, "pc3": 0}[name]
        assert found["cpus"] == int(host.sh("nproc"))
        assert found["mem_total_mb"] == int(host.sh("awk '/^MemTotal:/ {print $2}' /proc/meminfo")) // 1024
        assert 0 < found["mem_available_mb"] <= found["mem_total_mb"]
        assert found["cpu_from"] == "cgroup", "a container's /proc/loadavg is the host's: its own use is counted"
        assert found["rtt_ms"] > 0 and found["age_s"] < 5
    text = pool.gt("status", "pc2").stdout
    assert "  load        3 sessions, CPU load " in text and "read through the relay" in text, text
    assert "by the health check's script" in pool.gt("status", "pc1").stdout


def test_pick_takes_the_host_with_room_and_json_says_why(pool: Pool) -> None:
    pool.sessions("pc1", 4)
    pool.sessions("pc2", 1)
    busy = pool.busy("pc3")  # no sessions, but its CPUs are taken
    try:
        wait_for(lambda: ((pool.load("pc3") or {}).get("cpu_load") or 0) >= 0.4, 30, "pc3's CPU load to show its busy loops")
        chosen = pool.pick_json()
        assert chosen["picked"] == "pc2" and chosen["candidates_from"] == "pool", chosen
        why = {row["host"]: row for row in chosen["candidates"]}
        assert why["pc2"]["why"].startswith("the lowest score") and why["pc2"]["sessions"] == 1
        assert why["pc1"]["sessions"] == 4 and "above pc2's" in why["pc1"]["why"]
        assert why["pc3"]["sessions"] == 0 and why["pc3"]["cpu_from"] == "cgroup" and why["pc3"]["cpu_load"] >= 0.3
        assert "CPU load" in why["pc3"]["why"] and "above pc2's" in why["pc3"]["why"]
        assert chosen["exports"] and all(pool.gt.local("pc2") in line for line in chosen["exports"])
    finally:
        pool.rest("pc3", busy)
    wait_for(lambda: ((pool.load("pc3") or {}).get("cpu_load") or 1) < 0.15, 30, "pc3's CPU load to fall once its loops ended")
    assert pool.picked() == "pc3", "an idle host with no sessions is the best again"

    # A cap: pc3 takes no session beyond its one; pc2 (1 session, perhaps a pick still reserved) has room.
    pool.sessions("pc3", 1)
    pool.configure({"pc1": {"pool": True}, "pc2": {"pool": True}, "pc3": {"pool": True, "max_sessions": 1}})
    chosen = pool.pick_json()
    why = {row["host"]: row for row in chosen["candidates"]}
    assert why["pc3"]["why"] == "at its cap: 1 session of max_sessions 1" and not why["pc3"]["eligible"]
    assert chosen["picked"] == "pc2"
    pool.configure({name: {"pool": True, "max_sessions": 1} for name in HOSTS})  # every host full
    refused = pool.pick()
    assert refused.returncode == 1 and refused.stdout == "false\n"
    lines = refused.stderr.splitlines()
    assert [line.split(":")[1].strip() for line in lines[:3]] == ["pc1", "pc2", "pc3"], lines
    assert all("at its cap" in line for line in lines[:3]) and lines[3].startswith("gt-remote: error: none of the 3 candidate host(s) can take work now")
    view = pool.gt("--config", str(pool.config), "status", "--pool")
    assert view.returncode == 1 and view.stdout.count("at its cap") == 3, view.stdout


END_SESSION = 0x7FFF0003


def end_sessions(url: str, names: list[str]) -> None:
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        for name in names:
            body = struct.pack("<I", END_SESSION) + struct.pack("<Q", len(name.encode())) + name.encode()
            conn.sendall(struct.pack(">I", len(body)) + body)
            data = b""
            while len(data) < 51:
                data += conn.recv(100)


def test_for_sticks_to_its_host_until_it_goes_away_and_move_leaves_it(pool: Pool) -> None:
    pool.sessions("pc1", 2)
    pool.sessions("pc3", 2)
    assert pool.picked("--for", "polecat-7") == "pc2"
    pool.sessions("pc2", 3)  # now the busiest: a new pick would go elsewhere, polecat-7 stays
    assert pool.picked("--for", "polecat-7") == "pc2"
    again = pool.pick_json("--for", "polecat-7")
    assert again["picked"] == "pc2" and again["sticky"] is True and again["placed_at"], again
    program = "import os; print(os.environ['GASTOWN_CCMUX_ADDR'])"
    ran = pool.gt("--config", str(pool.config), "exec", "--pick", "--for", "polecat-7", "--", "python3", "-c", program)
    assert ran.returncode == 0 and ran.stdout.strip() == pool.gt.local("pc2"), ran.stderr
    passed_on = pool.gt("exec", "pc2", "python3", "-c", "import sys; print(sys.argv[1:])", "--for", "x", "--pick")
    assert passed_on.stdout.strip() == "['--for', 'x', '--pick']", "exec's options end at HOST: the command keeps its own"

    pool.hosts["pc2"].pause()  # pc2 goes away
    try:
        wait_for(lambda: pool.gt.status("pc2")[0]["state"] == "reconnecting", 30, "pc2's supervisor to notice")
        refused = pool.pick("--for", "polecat-7")
        assert refused.returncode == 1 and refused.stdout == "false\n"
        assert "polecat-7 is placed on pc2, which is not up (reconnecting since " in refused.stderr, refused.stderr
        assert "--for polecat-7 --move" in refused.stderr and "its panes on pc2 stay there" in refused.stderr
        away = pool.pick_json()
        assert away["picked"] in ("pc1", "pc3")
        assert [row["why"] for row in away["candidates"] if row["host"] == "pc2"][0].startswith("reconnecting since ")
        moved = pool.pick("--for", "polecat-7", "--move")
        assert moved.returncode == 0, moved.stderr
        new_home = [name for name in HOSTS if exports(moved.stdout)["GASTOWN_CCMUX_ADDR"] == pool.gt.local(name)][0]
        assert new_home in ("pc1", "pc3")
        assert f"polecat-7 moved from pc2 to {new_home}; its panes on pc2 stay there" in moved.stderr, moved.stderr
        assert pool.picked("--for", "polecat-7") == new_home
    finally:
        pool.hosts["pc2"].unpause()
    wait_for(lambda: pool.load("pc2") is not None, 60, "pc2 to come back, with its figures")
    end_sessions(pool.gt.local("pc2"), ["s0", "s1", "s2"])
    wait_for(lambda: (pool.load("pc2") or {}).get("sessions") == 0, 30, "pc2's sessions to end")
    assert pool.picked() == "pc2", "the host that came back, now the idlest, is used again"
    assert pool.picked("--for", "polecat-7") == new_home, "a moved polecat stays where it moved"
    forgot = pool.pick("--forget", "polecat-7")
    assert forgot.returncode == 0 and f"forgot that polecat-7 was placed on {new_home}" in forgot.stderr
    assert pool.pick_json("--for", "polecat-7")["sticky"] is False


def test_ten_picks_at_once_spread_over_the_hosts(pool: Pool) -> None:
    pool.configure({"pc1": {"pool": True, "max_sessions": 2}, "pc2": {"pool": True}, "pc3": {"pool": True}})
    command = pool.gt.command("--config", str(pool.config), "pick")
    picks = [subprocess.Popen(command, env=pool.gt.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(10)]
    outputs = [pick.communicate(timeout=120) for pick in picks]
    assert [pick.returncode for pick in picks] == [0] * 10, [err for _, err in outputs]
    by_address = {pool.gt.local(name): name for name in HOSTS}
    spread = Counter(by_address[exports(out)["GASTOWN_CCMUX_ADDR"]] for out, _ in outputs)
    assert spread == {"pc1": 2, "pc2": 4, "pc3": 4}, spread  # pc1 up to its cap, the others by turns

    # The callers open their sessions: each reservation ends once its host's count shows it.
    for name, count in spread.items():
        pool.sessions(name, count)
    view = json.loads(pool.gt("--config", str(pool.config), "status", "--pool", "--json").stdout)
    assert {row["host"]: (row["sessions"], row["reserved"]) for row in view["candidates"]} == {"pc1": (2, 0), "pc2": (4, 0), "pc3": (4, 0)}
    assert view["picked"] in ("pc2", "pc3") and "at its cap" in [row["why"] for row in view["candidates"] if row["host"] == "pc1"][0]


def test_the_relay_reads_the_figures_through_the_stdio_transport(gt: Gt, dropbear_host: SshHost) -> None:
    """Where sshd opens no channel to the relay (Dropbear: #31), its load op goes over the stdio
    transport like every stream: still no process started for the figures."""
    gt.ssh_config = dropbear_host.ssh_config
    assert gt.up(dropbear_host, "--keepalive", "1").returncode == 0
    wait_for(lambda: gt.status("gaming-pc")[0]["load"], 30, "the first load figures")
    [row] = gt.status("gaming-pc")
    assert row["transport"] == "stdio" and row["load"]["read_by"] == "relay", row
    send_session(gt.local("gaming-pc"), "over-stdio")
    wait_for(lambda: gt.status("gaming-pc")[0]["load"]["sessions"] == 1, 30, "the session count through the stdio transport")
    assert gt("pick", "gaming-pc").returncode == 0
