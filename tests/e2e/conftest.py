"""Fixtures shared by the end-to-end tests only."""

from __future__ import annotations

from typing import Any

import pytest

from tests.e2e.helpers import MOTD_ON
from tests.testbed import SshHost


@pytest.fixture
def chatty(host_factory: Any) -> SshHost:
    """One container with MOTD on; tests reach its accounts with `as_user`."""
    host: SshHost = host_factory(command=MOTD_ON)
    return host
