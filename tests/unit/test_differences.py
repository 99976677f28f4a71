"""`up` for a host already up refuses any setting that differs from the running tunnel's: the
comparison is derived from HostSettings' fields, so a setting added later is compared unless
it is listed, with a reason, as one that does not shape a tunnel (issue #28)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from gt_remote.base.config import FIELD_OF_KEY, HOST_KEYS, HostSettings, given_fields
from gt_remote.host.lifecycle import NOT_COMPARED, as_running, differences


def running(settings: HostSettings) -> dict[str, Any]:
    """A status as the supervisor writes it for `settings`."""
    return {"local": settings.local_url, "remote_port": settings.remote_port, "settings": json.loads(settings.to_json())}


def asked() -> HostSettings:
    return HostSettings(name="pc", destination="gamer@pc", local_url="tcp://127.0.0.1:19999")


def test_the_same_settings_differ_in_nothing() -> None:
    assert differences(asked(), running(asked())) == []


def test_a_tunnel_with_another_install_dir_is_a_difference() -> None:
    up = running(dataclasses.replace(asked(), install_dir="/opt/gt"))
    assert differences(asked(), up) == [("install dir", "/opt/gt", "~/.local/share (the default)")]


def test_every_setting_that_shapes_a_tunnel_is_compared() -> None:
    """Change each field in turn: it is a difference, unless NOT_COMPARED says why not."""
    base = asked()
    samples = {bool: lambda v: not v, int: lambda v: v + 1, float: lambda v: v + 1.5, str: lambda v: v + "x", type(None): lambda v: "/other"}
    for field in dataclasses.fields(HostSettings):
        value = getattr(base, field.name)
        if isinstance(value, tuple):
            changed: object = (*value, "extra")
        else:
            changed = samples[type(value)](value)
        other = running(dataclasses.replace(base, **{field.name: changed}))
        found = differences(base, other)
        assert bool(found) is (field.name not in NOT_COMPARED), (field.name, found)


def test_every_setting_left_out_says_why_and_exists() -> None:
    names = {field.name for field in dataclasses.fields(HostSettings)}
    assert set(NOT_COMPARED) <= names
    assert all(reason.strip() for reason in NOT_COMPARED.values())


def test_a_supervisor_from_before_a_setting_counts_as_having_the_asked_value() -> None:
    old = running(asked())
    del old["settings"]["install_dir"]
    assert differences(dataclasses.replace(asked(), install_dir="/opt/gt"), old) == []


# --- defaults stay defaults (issue #30.4) ---------------------------------------------------


def test_a_bare_up_takes_what_it_was_not_given_from_the_running_tunnel() -> None:
    """`up pc --local ...:29999 --keepalive 2`, then a bare `up pc`: nothing given, nothing to
    refuse, and the lines it prints are the running tunnel's."""
    running_ = running(dataclasses.replace(asked(), local_url="tcp://127.0.0.1:29999", keepalive=2.0, back=("dolt",), install_dir="/opt/gt"))
    bare = HostSettings(name="pc", destination="pc", local_url="tcp://127.0.0.1:9999")  # what resolve() makes of `up pc`
    assert differences(bare, running_) != []  # compared as before, the defaults would be refused
    adopted = as_running(bare, running_, given=frozenset())
    assert differences(adopted, running_) == []
    assert (adopted.local_url, adopted.keepalive, adopted.destination, adopted.back, adopted.install_dir) == ("tcp://127.0.0.1:29999", 2.0, "gamer@pc", ("dolt",), "/opt/gt")


def test_an_option_given_that_differs_is_still_refused() -> None:
    running_ = running(dataclasses.replace(asked(), local_url="tcp://127.0.0.1:29999"))
    asked_ = HostSettings(name="pc", destination="pc", local_url="tcp://127.0.0.1:9999", keepalive=7.0)
    adopted = as_running(asked_, running_, given={"keepalive"})
    assert differences(adopted, running_) == [("keepalive", 5.0, 7.0)]  # the local address, not given, is the tunnel's
    assert adopted.local_url == "tcp://127.0.0.1:29999"
    assert differences(as_running(asked_, running_, given=None), running_) == differences(asked_, running_)  # None: all given, as before


def test_given_means_on_the_command_line_or_in_the_config_table() -> None:
    options = {"local": None, "keepalive": 7.0, "remote_port": None, "resume": False}  # click's unset options are None
    assert given_fields({}, options) == {"keepalive", "resume"}
    assert given_fields({"ssh": "gamer@pc", "local": "unix:///tmp/x.sock", "install_dir": "/opt/gt"}, {}) == {"destination", "local_url", "install_dir"}
    fields = {field.name for field in dataclasses.fields(HostSettings)}
    assert {FIELD_OF_KEY.get(key, key) for key in HOST_KEYS} <= fields  # every config key names a setting
