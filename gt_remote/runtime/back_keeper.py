"""The back keeper: one job of the supervisor, keeping the host's back tunnels (the gaming
PC's 127.0.0.1:PORT reaching a service on the laptop; gt_remote/tunnel/back.py).

At bring-up it starts each tunnel and waits until the gaming PC's port listens, or is
refused because another program holds it (then `up` fails, naming the owner). A laptop
service that does not answer yet (the town's Dolt not started) is only a warning: the
tunnel listens, and each connection finds the service once it runs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from gt_remote.base.backs import BackSpec, parse_back
from gt_remote.base.config import HostSettings
from gt_remote.base.service_probe import probe_service
from gt_remote.remote import lease as remote_lease
from gt_remote.runtime.relay_keeper import RelayKeeper
from gt_remote.tunnel.back import BackTunnel
from gt_remote.tunnel.link import Link
from gt_remote.tunnel.resumable import RelayPath

log = logging.getLogger("gt_remote.runtime.supervisor")  # one log for the supervisor's jobs

Say = Callable[[str], None]
FIRST_OUTCOME_TIMEOUT = 15.0
SERVICE_PROBE_TIMEOUT = 2.0


class BackKeeper:
    def __init__(self, settings: HostSettings, link: Link, relay: RelayKeeper) -> None:
        self.relay = relay
        # Back streams ride their own path (heartbeats, budget, counts), under the same owner as
        # the forward streams: `down`'s close by owner ends both, and the relay's listeners.
        self.path = RelayPath(link, "", settings.resume_window, owner=remote_lease.lease_name(settings))
        self.tunnels = [BackTunnel(parse_back(text), link, self.path, self._relay_in_use, relay.on_missing) for text in settings.back]

    def _relay_in_use(self) -> bool:
        self.path.socket_path = self.relay.path.socket_path  # the relay keeper learns it (and again after a restart)
        return self.relay.in_use

    async def start(self, say: Say) -> None:
        """Listen on the gaming PC for each tunnel; BackPortHeld if a port is another's."""
        if not self.tunnels:
            return
        for tunnel in self.tunnels:
            tunnel.start()
        waits = [asyncio.wait_for(tunnel.first_outcome.wait(), FIRST_OUTCOME_TIMEOUT) for tunnel in self.tunnels]
        results = await asyncio.gather(*waits, return_exceptions=True)
        for tunnel, result in zip(self.tunnels, results, strict=True):
            if tunnel.refusal is not None:
                raise tunnel.refusal
            if isinstance(result, BaseException):
                say(f"warning: back tunnel {tunnel.spec.canonical} is not listening yet on the gaming PC ({tunnel.why or 'no answer'}); it keeps trying")
                continue
            say(f"back tunnel {tunnel.spec.canonical}: the gaming PC's 127.0.0.1:{tunnel.spec.remote_port} reaches {tunnel.spec.local_text} here ({tunnel.mode})")
        await self.check_services(say)
        self.path.start_heartbeats()

    async def check_services(self, say: Say) -> list[dict[str, Any]]:
        """Does each laptop service answer (for dolt, the MySQL greeting)? A warning if not."""
        found = []
        for tunnel in self.tunnels:
            spec = tunnel.spec
            answer = await probe_service(spec.local_host, spec.local_port, spec.protocol, SERVICE_PROBE_TIMEOUT)
            if not answer.answers:
                say(f"warning: back tunnel {spec.canonical}: {answer.detail}; the tunnel waits for it")
            found.append({"spec": spec.canonical, "answers": answer.answers, "detail": answer.detail})
        return found

    def specs(self) -> list[BackSpec]:
        return [tunnel.spec for tunnel in self.tunnels]

    def status(self) -> list[dict[str, Any]]:
        return [tunnel.status() for tunnel in self.tunnels]

    async def close(self) -> None:
        await asyncio.gather(*(tunnel.close() for tunnel in self.tunnels))
