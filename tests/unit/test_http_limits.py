"""The edge's pre-request limits: read from the environment, checked at start-up, and a connection
cap the descriptor limit can honour."""

from __future__ import annotations

import resource
import subprocess
import sys

import pytest

from libs.http_limits import RESERVED_DESCRIPTORS, ConnectionLimits
from libs.settings import ConfigError
from services.edge.settings import EdgeSettings


def test_defaults() -> None:
    limits = EdgeSettings.from_env({}).limits
    assert limits == ConnectionLimits()
    assert (limits.max_header_bytes, limits.max_headers, limits.head_timeout, limits.min_body_rate,
            limits.max_connections) == (32768, 100, 10.0, 1024.0, 2048)


def test_each_variable_sets_its_limit_and_the_head_timeout_scales() -> None:
    limits = EdgeSettings.from_env({"MAX_HEADER_BYTES": "4096", "MAX_HEADERS": "20", "SY_TIMEOUT_REQUEST_HEAD": "4",
                                    "SY_TIME_SCALE": "0.5", "MIN_BODY_RATE": "100", "MAX_CONNECTIONS": "7"}).limits
    assert limits == ConnectionLimits(max_header_bytes=4096, max_headers=20, head_timeout=2.0, min_body_rate=100.0,
                                      max_connections=7)


@pytest.mark.parametrize(("name", "value"), [
    ("MAX_HEADER_BYTES", "100"), ("MAX_HEADER_BYTES", "big"), ("MAX_HEADERS", "0"), ("SY_TIMEOUT_REQUEST_HEAD", "0"),
    ("MIN_BODY_RATE", "-1"), ("MIN_BODY_RATE", "fast"), ("MAX_CONNECTIONS", "0"), ("MAX_CONNECTIONS", "1.5"),
])
def test_an_invalid_value_fails_at_start_up_naming_its_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        EdgeSettings.from_env({name: value})


def _budget_under(limit: int, requested: int) -> tuple[int, str]:
    """descriptor_budget in a fresh process whose descriptor limit is `limit` (soft and hard)."""
    code = f"from libs.http_limits import descriptor_budget; print(descriptor_budget({requested}))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit)),
    )
    return int(done.stdout), done.stderr


def test_a_cap_above_the_descriptor_limit_is_lowered_to_what_the_limit_leaves() -> None:
    budget, warning = _budget_under(1024, 2048)
    assert budget == 1024 - RESERVED_DESCRIPTORS
    assert "MAX_CONNECTIONS=2048" in warning
    assert _budget_under(1024, 100) == (100, "")
