"""Per-upstream attempt limits (libs/openai_upstream/config.py) and the order upstreams are tried in
(failover.py)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from libs import secrets
from libs.openai_upstream.config import Upstream
from libs.openai_upstream.failover import Failover
from libs.settings import ConfigError
from libs.worker_metrics import WorkerMetrics
from services.openai_worker.backend import OpenAIBackend
from services.openai_worker.config import load_upstreams


def test_limits_default_and_scale_with_the_time_scale(tmp_path: Path) -> None:
    config = tmp_path / "u.toml"
    config.write_text("[[upstreams]]\nname = 'a'\nbase_url = 'http://a/v1'\nmodels = ['m']\n"
                      "connect_timeout = 2\nfirst_byte_timeout = 4.5\nanswer_timeout = 60\ncooldown = 10\n")
    [env_one, toml_one] = load_upstreams({"OPENAI_BASE_URL": "http://e/v1", "OPENAI_MODELS": "m",
                                          "OPENAI_WORKER_CONFIG": str(config), "SY_TIME_SCALE": "0.5"})
    assert (env_one.connect_timeout, env_one.first_byte_timeout, env_one.answer_timeout, env_one.cooldown) == (
        5.0, 7.5, 60.0, 15.0)
    assert (toml_one.connect_timeout, toml_one.first_byte_timeout, toml_one.answer_timeout, toml_one.cooldown) == (
        1.0, 2.25, 30.0, 5.0)


@pytest.mark.parametrize("value", ["0", "-1", "'soon'", "true"])
def test_a_bad_limit_is_refused(tmp_path: Path, value: str) -> None:
    config = tmp_path / "u.toml"
    config.write_text(f"[[upstreams]]\nbase_url = 'http://a/v1'\nmodels = ['m']\nfirst_byte_timeout = {value}\n")
    with pytest.raises(ConfigError, match=r"upstreams\[0\]\.first_byte_timeout"):
        load_upstreams({"OPENAI_WORKER_CONFIG": str(config)})


def failover(*names: str) -> tuple[Failover, list[Upstream]]:
    ups = [Upstream(name=n, base_url=f"http://{n}/v1", api_key="", models=("m",), cooldown=30.0) for n in names]
    return Failover(ups, WorkerMetrics(CollectorRegistry(), "p")), ups


def test_the_rotation_tries_an_upstream_put_aside_last() -> None:
    f, ups = failover("a", "b", "c")
    firsts = [f.candidates("m")[0].name for _ in range(3)]
    assert firsts == ["a", "b", "c"]  # rotating
    f.put_aside(ups[0])
    for _ in range(6):
        order = [u.name for u in f.candidates("m")]
        assert order[-1] == "a" and sorted(order) == ["a", "b", "c"]  # still used, last


def test_the_cooldown_doubles_while_an_upstream_keeps_hanging() -> None:
    f, ups = failover("a", "b")
    spans = []
    for _ in range(6):
        f.put_aside(ups[0])
        spans.append(f.aside["a"][0])
    now = time.monotonic()
    assert [round(s - now) for s in spans] == [30, 60, 120, 240, 240, 240]  # at most 8x


def test_credentials_of_every_upstream_are_held() -> None:
    secrets.forget_all()
    try:
        ups = [Upstream(name="a", base_url="http://u:basepass99@a/v1", api_key="0123456789abcdef", models=("m",),
                        proxy="http://pu:proxypass99@p:3128")]
        OpenAIBackend(ups, WorkerMetrics(CollectorRegistry(), "p"))
        assert secrets.scrub("0123456789abcdef basepass99 proxypass99") == "[redacted] [redacted] [redacted]"
    finally:
        secrets.forget_all()
