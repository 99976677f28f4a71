"""Several hosts at once, and a gaming PC reachable only through a bastion (ProxyJump)."""

from __future__ import annotations

import json
from typing import Any

from docker import from_env
from tests.conftest import Gt
from tests.helpers import STANDIN_PATTERN, answers, exports, ping
from tests.testbed import STANDIN, combined_ssh_config, free_loopback_port, session_labels, start_host, wait_for


def rows(gt: Gt) -> dict[str, dict[str, Any]]:
    return {row["host"]: row for row in gt.status()}


def test_two_hosts_at_once_are_independent(gt: Gt, host_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    first, second = host_factory("pc1"), host_factory("pc2")
    gt.ssh_config = combined_ssh_config(tmp_path / "ssh_config", first, second)
    port1, port2 = free_loopback_port(), free_loopback_port()
    url1, url2 = f"tcp://127.0.0.1:{port1}", f"tcp://127.0.0.1:{port2}"
    up1 = gt("up", "pc1", "--local", url1, "--keepalive", "1", "--server-binary", str(STANDIN))
    up2 = gt("up", "pc2", "--local", url2, "--keepalive", "1", "--server-binary", str(STANDIN))
    assert up1.returncode == up2.returncode == 0, up1.stderr + up2.stderr
    assert exports(up1.stdout)["GASTOWN_CCMUX_ADDR"] == url1 and exports(up2.stdout)["GASTOWN_CCMUX_ADDR"] == url2
    listed = gt("status", "--json")
    assert listed.returncode == 0 and [row["host"] for row in json.loads(listed.stdout)] == ["pc1", "pc2"]
    assert rows(gt)["pc1"]["supervisor_pid"] != rows(gt)["pc2"]["supervisor_pid"]

    first.pause()  # one host failing...
    try:
        wait_for(lambda: rows(gt)["pc1"]["state"] == "reconnecting", 15, "pc1 to notice")
        assert answers(url2)  # ...never disturbs another
        other = rows(gt)["pc2"]
        assert other["state"] == "up" and other["reconnects"] == 0
        assert gt("status").returncode == 1
    finally:
        first.unpause()
    wait_for(lambda: rows(gt)["pc1"]["state"] == "up", 45, "pc1 to recover")
    assert answers(url1)

    down = gt("down", "--all")
    assert down.returncode == 0 and "pc1: down" in down.stderr and "pc2: down" in down.stderr
    assert gt.status() == []
    assert first.pids(f"{STANDIN_PATTERN}9999") and second.pids(f"{STANDIN_PATTERN}9999")


def test_gaming_pc_behind_a_bastion(gt: Gt, tmp_path, client_key, test_image) -> None:  # type: ignore[no-untyped-def]
    client = from_env()
    private = client.networks.create(f"gtr-private-{tmp_path.name}", driver="bridge", internal=True, labels=session_labels())
    bastion = target = None
    try:
        bastion = start_host(tmp_path / "bastion", client_key, alias="bastion")
        private.connect(bastion.wrapped)
        target = start_host(tmp_path / "target", client_key, alias="gaming-pc", network=private.name, publish=False)
        target.extra_config.append("ProxyJump bastion")
        gt.ssh_config = combined_ssh_config(tmp_path / "ssh_config", bastion, target)
        # one known_hosts file for both, as a user's would be
        known = tmp_path / "known_hosts"
        known.write_text(bastion.host_key_line + "\n" + target.host_key_line + "\n")
        gt.ssh_config.write_text(gt.ssh_config.read_text().replace(str(bastion.known_hosts), str(known)).replace(str(target.known_hosts), str(known)))

        result = gt("up", "gaming-pc", "--keepalive", "1", "--server-binary", str(STANDIN))
        assert result.returncode == 0, result.stderr
        ping(gt.local())
        server_pid = target.pids(f"{STANDIN_PATTERN}9999")

        for round_ in (1, 2):  # a fault on the bastion: its sshd serving our jump is killed
            for pid in bastion.pids("sshd: gamer"):
                bastion.kill(pid)
            wait_for(lambda: (r := rows(gt)["gaming-pc"])["state"] == "up" and r["reconnects"] >= round_, 45, f"recovery #{round_}")
            wait_for(lambda: answers(gt.local()), 30, "a Pong through the bastion")
        assert target.pids(f"{STANDIN_PATTERN}9999") == server_pid
    finally:
        gt("down", "--all")
        for host in (target, bastion):
            if host is not None:
                host.container.stop()
        private.remove()
