"""Helpers shared by the unit tests only."""

from __future__ import annotations

import struct

HEADER = struct.Struct(">cI")
