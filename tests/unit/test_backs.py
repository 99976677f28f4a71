"""Back tunnels' specs (gt_remote/base/backs.py): ssh -R's grammar, the presets, the variables
the panes get, and the config key; a bad spec is one line with the forms that work."""

from __future__ import annotations

import pytest

from gt_remote.base.backs import BackSpec, environment, parse_back, parse_backs
from gt_remote.base.config import HostSettings, resolve
from gt_remote.base.errors import UsageError
from gt_remote.host.lifecycle import differences


@pytest.mark.parametrize(
    ("text", "remote", "host", "local", "canonical"),
    [
        ("3307", 3307, "127.0.0.1", 3307, "3307"),
        ("3307:127.0.0.1:3307", 3307, "127.0.0.1", 3307, "3307"),
        ("8080:127.0.0.1:3000", 8080, "127.0.0.1", 3000, "8080:127.0.0.1:3000"),
        ("8080:localhost:3000", 8080, "127.0.0.1", 3000, "8080:127.0.0.1:3000"),
        ("8080:::1:3000", 8080, "::1", 3000, "8080:::1:3000"),
        ("dolt", 3307, "127.0.0.1", 3307, "dolt"),
        ("gt-proxy", 9876, "127.0.0.1", 9876, "gt-proxy"),
        ("dolt:13307", 13307, "127.0.0.1", 3307, "dolt:13307"),
        ("dolt:3307:127.0.0.1:40000", 3307, "127.0.0.1", 40000, "dolt:3307:127.0.0.1:40000"),
    ],
)
def test_a_spec_reads_as_ssh_minus_r_does_and_keeps_one_canonical_text(text: str, remote: int, host: str, local: int, canonical: str) -> None:
    spec = parse_back(text)
    assert (spec.remote_port, spec.local_host, spec.local_port) == (remote, host, local)
    assert spec.canonical == canonical
    assert parse_back(spec.canonical) == spec, "the canonical text reads back as the same spec"


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("", "is not a spec"),
        ("mysql", "neither a port nor a preset"),
        ("70000", "is not a port number"),
        ("0", "is not a port number"),
        ("3307:10.0.0.5:3307", "not this laptop's loopback"),
        ("3307:db.example.com:3307", "not this laptop's loopback"),
        ("3307:127.0.0.1", "is not a spec"),
        ("dolt:x", "is not a port number"),
        ("3307:127.0.0.1:\u00b2", "is not a port number"),
        ("\u0663\u0663", "neither a port nor a preset"),
    ],
)
def test_a_bad_spec_is_one_line_naming_the_cause_and_the_forms_that_work(text: str, said: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_back(text)
    assert said in caught.value.cause and "\n" not in str(caught.value)


def test_the_dolt_preset_tells_gt_and_bd_the_port_on_the_gaming_pc() -> None:
    assert parse_back("dolt:13307").environment() == {
        "GT_DOLT_HOST": "127.0.0.1",
        "GT_DOLT_PORT": "13307",
        "BEADS_DOLT_SERVER_HOST": "127.0.0.1",
        "BEADS_DOLT_PORT": "13307",
    }
    assert parse_back("gt-proxy").environment() == {"GT_PROXY_URL": "https://127.0.0.1:9876"}
    assert parse_back("8080").environment() == {}, "a plain port names no variable"
    assert environment(("dolt", "gt-proxy"))["GT_PROXY_URL"] == "https://127.0.0.1:9876"


def test_two_specs_on_one_gaming_pc_port_are_refused_and_repeats_kept_once() -> None:
    with pytest.raises(UsageError, match="both want port 3307"):
        parse_backs(["dolt", "3307:127.0.0.1:4000"])
    assert parse_backs(["dolt", "dolt"]) == ("dolt",)
    with pytest.raises(UsageError, match="back must be a list"):
        parse_backs("dolt")


def test_the_config_key_and_the_option_give_the_tunnel_its_back_tunnels() -> None:
    config = {"gaming-pc": {"back": ["dolt", "gt-proxy"]}}
    assert resolve("gaming-pc", config, {}, None).back == ("dolt", "gt-proxy")
    assert resolve("gaming-pc", config, {"back": ("dolt:13307",)}, None).back == ("dolt:13307",), "the command line replaces the config's list"
    settings = resolve("gaming-pc", config, {}, None)
    assert HostSettings.from_json(settings.to_json()) == settings


def test_back_tunnels_that_differ_from_the_running_ones_are_a_difference() -> None:
    running = resolve("gaming-pc", {}, {"back": ("dolt",)}, None)
    status = {"settings": {"back": ["dolt"]}}
    assert differences(running, status) == []
    asked = resolve("gaming-pc", {}, {"back": ("dolt", "8080")}, None)
    assert differences(asked, status) == [("back tunnels", "--back dolt", "--back dolt --back 8080")]


def test_a_spec_is_a_value() -> None:
    assert BackSpec(3307, "127.0.0.1", 3307, "dolt") == parse_back("dolt")
