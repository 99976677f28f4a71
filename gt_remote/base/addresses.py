"""The GASTOWN_CCMUX_ADDR contract: the one place that parses and formats ccmux addresses.

`tcp://host:port` (port required, 1-65535, IPv6 in brackets) or `unix:///absolute/path`.
Unset means the local default ccmux socket, so local use is unchanged.
"""

from __future__ import annotations

import ipaddress
import os
import shlex
from collections.abc import Mapping
from typing import NamedTuple

from gt_remote.base.errors import AddressError
from gt_remote.base.sanitize import ascii_int

ENV_VARS = ("GASTOWN_CCMUX_ADDR", "CCMUX_ADDR", "FUGUE_ADDR")
TCP_EXAMPLE = "tcp://127.0.0.1:9999"
UNIX_EXAMPLE = "unix:///run/user/1000/gaming-pc.sock"


# NamedTuples, not dataclasses: this module is on the path of `gt-remote env` in every new
# shell, and a dataclass costs that path the dataclasses import and half a millisecond each.
class TcpAddress(NamedTuple):
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


class UnixAddress(NamedTuple):
    path: str

    @property
    def url(self) -> str:
        return f"unix://{self.path}"

    @property
    def is_loopback(self) -> bool:
        return True


Address = TcpAddress | UnixAddress


def _bad(text: str, part: str, example: str) -> AddressError:
    return AddressError(f"bad address {text!r}: {part}", f"write it like {example}")


def parse_address(text: str) -> Address:
    """Parse a ccmux address URL; every error names the bad part and shows a good one."""
    scheme, sep, rest = text.partition("://")
    if not sep:
        raise _bad(text, "missing scheme (tcp:// or unix://)", TCP_EXAMPLE)
    if scheme == "unix":
        return _parse_unix(text, rest)
    if scheme == "tcp":
        return _parse_tcp(text, rest)
    raise _bad(text, f"unknown scheme {scheme!r} (use tcp:// or unix://)", TCP_EXAMPLE)


def _parse_unix(text: str, path: str) -> UnixAddress:
    if not path:
        raise _bad(text, "empty socket path", UNIX_EXAMPLE)
    if not path.startswith("/"):
        raise _bad(text, f"socket path {path!r} is relative (unix:// needs an absolute path, three slashes)", UNIX_EXAMPLE)
    if "\0" in path:
        raise _bad(text, "socket path contains a NUL byte", UNIX_EXAMPLE)
    return UnixAddress(path)


def _parse_tcp(text: str, rest: str) -> TcpAddress:
    if "/" in rest or "?" in rest or "#" in rest or "@" in rest:
        raise _bad(text, "only host:port may follow tcp:// (no user, path or query)", TCP_EXAMPLE)
    host, port_text = _split_host_port(text, rest)
    if not port_text:
        raise _bad(text, "missing port", TCP_EXAMPLE)
    port = ascii_int(port_text)  # ASCII digits only: str.isdigit() takes '²', which int() refuses
    if port is None:
        raise _bad(text, f"port {port_text!r} is not a number", TCP_EXAMPLE)
    if not 1 <= port <= 65535:
        raise _bad(text, f"port {port} is out of range 1-65535", TCP_EXAMPLE)
    return TcpAddress(host, port)


def _split_host_port(text: str, rest: str) -> tuple[str, str]:
    if rest.startswith("["):
        host, bracket, tail = rest[1:].partition("]")
        if not bracket:
            raise _bad(text, "unclosed '[' around an IPv6 host", "tcp://[::1]:9999")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise _bad(text, f"{host!r} in brackets is not an IPv6 address", "tcp://[::1]:9999") from None
        if tail and not tail.startswith(":"):
            raise _bad(text, f"unexpected {tail!r} after the IPv6 host", "tcp://[::1]:9999")
        return host, tail[1:]
    host, colon, port = rest.rpartition(":")
    if not colon:
        raise _bad(text, "missing port", TCP_EXAMPLE)
    if not host:
        raise _bad(text, "missing host", TCP_EXAMPLE)
    if ":" in host:
        raise _bad(text, "an IPv6 host needs brackets", "tcp://[::1]:9999")
    return host, port


def default_ccmux_socket(env: Mapping[str, str] | None = None) -> UnixAddress:
    """Where a local ccmux server listens: `$XDG_RUNTIME_DIR/ccmux/ccmux.sock`, else /tmp."""
    env = os.environ if env is None else env
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime:
        return UnixAddress(os.path.join(runtime, "ccmux", "ccmux.sock"))
    return UnixAddress(f"/tmp/ccmux-{os.getuid()}/ccmux.sock")


def address_from_env(env: Mapping[str, str] | None = None, var: str = "GASTOWN_CCMUX_ADDR") -> Address:
    """The address a gastown fork should use: the variable if set, else the local default."""
    env = os.environ if env is None else env
    value = env.get(var)
    if value is None or value == "":
        return default_ccmux_socket(env)
    return parse_address(value)


def require_loopback(address: Address) -> Address:
    """ccmux has no auth: a listener anywhere but loopback would expose every pane."""
    if not address.is_loopback:
        raise AddressError(
            f"refusing local address {address.url}: it is not loopback and ccmux has no authentication",
            f"use a loopback address such as {TCP_EXAMPLE} or a unix:// socket",
        )
    return address


def normalize_local(address: Address) -> Address:
    """Bind and export 127.0.0.1 for `localhost`, so both ends use one address family."""
    if isinstance(address, TcpAddress) and address.host == "localhost":
        return TcpAddress("127.0.0.1", address.port)
    return address


def export_vars(url: str, server: str) -> list[tuple[str, str]]:
    """The variables a shell needs: gastown's, ccmux's, and fugue's for a fugue server."""
    names = ["GASTOWN_CCMUX_ADDR", "CCMUX_ADDR"]
    if server.startswith("fugue"):
        names.append("FUGUE_ADDR")
    return [(name, url) for name in names]


def export_lines(url: str, server: str, shell: str = "sh") -> list[str]:
    """Lines for `eval`: POSIX `export` or fish `set -gx`, values quoted for that shell."""
    if shell == "fish":
        quoted = "'" + url.replace("\\", "\\\\").replace("'", "\\'") + "'"
        return [f"set -gx {name} {quoted}" for name, _ in export_vars(url, server)]
    return [f"export {name}={shlex.quote(value)}" for name, value in export_vars(url, server)]
