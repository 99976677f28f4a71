"""`gt-remote ping` with no tunnel: the missing eval, a closed address and an unknown host named."""

from __future__ import annotations

from tests.conftest import Gt
from tests.helpers import one_error_line
from tests.testbed import free_loopback_port

# --- ping -------------------------------------------------------------------------------


def test_ping_without_the_variable_names_the_missing_eval(gt: Gt) -> None:
    result = gt("ping")
    assert result.returncode == 1
    line = one_error_line(result.stderr)
    assert "GASTOWN_CCMUX_ADDR is unset in this shell" in line and 'eval "$(gt-remote up HOST)"' in line


def test_ping_of_a_closed_address_says_the_tunnel_is_down(gt: Gt) -> None:
    gt.env["GASTOWN_CCMUX_ADDR"] = f"tcp://127.0.0.1:{free_loopback_port()}"
    line = one_error_line(gt("ping").stderr)
    assert "the tunnel is down" in line and "Errno" not in line


def test_ping_of_an_unknown_host(gt: Gt) -> None:
    result = gt("ping", "gamign-pc")
    assert result.returncode == 1 and "never brought up a host named 'gamign-pc'" in one_error_line(result.stderr)

