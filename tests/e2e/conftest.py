"""Fixtures shared by the end-to-end tests only."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.helpers import MOTD_ON
from tests.e2e.mariadb import LaptopMariaDB, start_mariadb
from tests.testbed import SshHost


@pytest.fixture
def chatty(host_factory: Any) -> SshHost:
    """One container with MOTD on; tests reach its accounts with `as_user`."""
    host: SshHost = host_factory(command=MOTD_ON)
    return host


@pytest.fixture
def laptop_mariadb() -> Iterator[LaptopMariaDB]:
    """A real MySQL-protocol server on the laptop, this test's own (tests/e2e/mariadb.py): a fresh
    mariadbd on a free loopback port, `root` without a password as with gastown's Dolt; ended by
    its pid and its files removed after the test. A server per test: it starts in about 0.7 s."""
    server = start_mariadb()
    try:
        yield server
    finally:
        server.stop()
