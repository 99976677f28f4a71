"""The GASTOWN_CCMUX_ADDR contract: parse/format round trips and precise rejections."""

from __future__ import annotations

import ipaddress
import shlex
import subprocess

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from gt_remote.base.addresses import (
    TcpAddress,
    UnixAddress,
    address_from_env,
    default_ccmux_socket,
    export_lines,
    normalize_local,
    parse_address,
    require_loopback,
)
from gt_remote.base.errors import AddressError
from tests.unit.strategies import FUZZ, TEXT

hostnames = st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,10}){0,2}", fullmatch=True)


ipv4 = st.ip_addresses(v=4).map(str)


ipv6 = st.ip_addresses(v=6).map(str)


ports = st.integers(1, 65535)


paths = st.lists(st.text(st.characters(blacklist_characters="/\0", blacklist_categories=("Cs",)), min_size=1, max_size=12), min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts))


# --- the address parser ----------------------------------------------------------------------


ADDRESS = st.one_of(
    TEXT,
    st.tuples(st.sampled_from(["tcp://", "unix://", "tcp://[", "udp://", ""]), TEXT, st.sampled_from(["", ":", "]:", ":9999"]), TEXT).map("".join),
)


@given(st.one_of(hostnames, ipv4, ipv6), ports)
def test_tcp_round_trip(host: str, port: int) -> None:
    address = TcpAddress(host, port)
    assert parse_address(address.url) == address
    if ":" in host:
        assert address.url == f"tcp://[{host}]:{port}"


@given(paths)
def test_unix_round_trip(path: str) -> None:
    assert parse_address(f"unix://{path}") == UnixAddress(path)
    assert parse_address(UnixAddress(path).url) == UnixAddress(path)


@given(st.one_of(hostnames, ipv4), st.one_of(st.integers(max_value=0), st.integers(min_value=65536)))
def test_out_of_range_ports_are_rejected(host: str, port: int) -> None:
    with pytest.raises(AddressError, match="out of range|is not a number"):
        parse_address(f"tcp://{host}:{port}")


@given(st.text(st.characters(blacklist_characters=":"), max_size=10).filter(lambda s: s not in ("tcp", "unix")))
def test_unknown_schemes_are_rejected(scheme: str) -> None:
    with pytest.raises(AddressError, match="unknown scheme|missing scheme"):
        parse_address(f"{scheme}://127.0.0.1:9999")


@pytest.mark.parametrize(
    ("text", "part", "example"),
    [
        ("tcp://127.0.0.1", "missing port", "tcp://127.0.0.1:9999"),
        ("tcp://:9999", "missing host", "tcp://127.0.0.1:9999"),
        ("tcp://::1:9999", "IPv6 host needs brackets", "tcp://[::1]:9999"),
        ("tcp://[::1:9999", "unclosed '['", "tcp://[::1]:9999"),
        ("tcp://[zz]:9999", "not an IPv6 address", "tcp://[::1]:9999"),
        ("tcp://host:abc", "'abc' is not a number", "tcp://127.0.0.1:9999"),
        ("tcp://host:99/path", "only host:port", "tcp://127.0.0.1:9999"),
        ("unix://", "empty socket path", "unix:///"),
        ("unix://run/x.sock", "is relative", "unix:///"),
        ("localhost:9999", "missing scheme", "tcp://127.0.0.1:9999"),
    ],
)
def test_errors_name_the_bad_part_and_show_an_example(text: str, part: str, example: str) -> None:
    with pytest.raises(AddressError) as caught:
        parse_address(text)
    message = str(caught.value)
    assert repr(text) in message and part in message and example in message


def test_unset_means_the_local_default_socket() -> None:
    assert address_from_env({}) == default_ccmux_socket({})
    assert address_from_env({"XDG_RUNTIME_DIR": "/run/user/7"}) == UnixAddress("/run/user/7/ccmux/ccmux.sock")
    assert address_from_env({"GASTOWN_CCMUX_ADDR": ""}).path.endswith("/ccmux.sock")  # type: ignore[union-attr]
    assert address_from_env({"GASTOWN_CCMUX_ADDR": "tcp://127.0.0.1:9999"}) == TcpAddress("127.0.0.1", 9999)


@given(st.one_of(ipv4, ipv6), ports)
def test_loopback_check(host: str, port: int) -> None:
    address = TcpAddress(host, port)
    if ipaddress.ip_address(host).is_loopback:
        assert require_loopback(address) == address
    else:
        with pytest.raises(AddressError, match="not loopback"):
            require_loopback(address)


@given(paths)
def test_export_lines_survive_a_real_shell(path: str) -> None:
    url = f"unix://{path}"
    script = "\n".join(export_lines(url, "fugue-server")) + '\nprintf "%s\\0%s\\0%s" "$GASTOWN_CCMUX_ADDR" "$CCMUX_ADDR" "$FUGUE_ADDR"'
    out = subprocess.run(["sh", "-c", script], capture_output=True, check=True).stdout
    assert out.split(b"\0") == [url.encode()] * 3


def test_export_lines_are_quoted() -> None:
    assert export_lines("unix:///tmp/a b", "ccmux-server") == [
        f"export GASTOWN_CCMUX_ADDR={shlex.quote('unix:///tmp/a b')}",
        f"export CCMUX_ADDR={shlex.quote('unix:///tmp/a b')}",
    ]


@FUZZ
@example(text="tcp://127.0.0.1:²")  # isdigit() took it, int() did not
@example(text="tcp://127.0.0.1:" + "9" * 5000)
@example(text="tcp://[::1%eth0]:9")
@given(text=ADDRESS)
def test_address_parser_takes_any_text(text: str) -> None:
    try:
        address = parse_address(text)
    except AddressError as error:
        assert error.fix.startswith("write it like")
        return
    assert parse_address(address.url) == address  # what it prints, it reads back the same
    if isinstance(address, TcpAddress):
        assert 1 <= address.port <= 65535
    else:
        assert isinstance(address, UnixAddress) and address.path.startswith("/") and "\0" not in address.path
    try:
        normalize_local(require_loopback(address))
    except AddressError:
        assert not address.is_loopback

