"""Hypothesis settings and strategies shared by the unit tests' fuzzing."""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

FUZZ = settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


# Text that hits the interesting corners: digits of every script, controls, separators.
ODD = st.sampled_from(["²", "٣", "\x1b", "\x00", "\n", "\r", "=", ":", "[", "]", "/", "%", "@", "\u202e", "\udc80", "9" * 30, "-", " ", "\t", "~", "~nobody-here/", "a" * 300])


TEXT = st.lists(st.one_of(st.text(max_size=8), ODD), max_size=12).map("".join)


JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), TEXT)
