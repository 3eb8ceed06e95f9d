"""Which HTTP client a call takes: the lean one only for plain HTTP without a proxy."""

from __future__ import annotations

import pytest

from libs.openai_upstream.call import plain_http, proxy_for
from libs.openai_upstream.config import Upstream


def upstream(base_url: str, proxy: str | None = None) -> Upstream:
    return Upstream(name="u", base_url=base_url, api_key="k", models=("m",), proxy=proxy)


@pytest.mark.parametrize(
    ("base_url", "proxy", "plain"),
    [
        ("http://vllm.models.svc:8000/v1", None, True),
        ("http://127.0.0.1:8090/v1", None, True),
        ("https://api.openai.com/v1", None, False),  # TLS: aiohttp
        ("http://vllm.models.svc:8000/v1", "http://proxy:3128", False),  # a proxy: aiohttp
        ("HTTP://upper.example/v1", None, True),
    ],
)
def test_plain_http_only_without_tls_or_proxy(base_url: str, proxy: str | None, plain: bool) -> None:
    assert plain_http(upstream(base_url), proxy) is plain


def test_an_upstream_proxy_and_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://env-proxy:3128")
    monkeypatch.setenv("NO_PROXY", "vllm.models.svc")
    assert proxy_for(upstream("http://vllm.models.svc:8000/v1")) is None  # NO_PROXY
    assert proxy_for(upstream("http://other.example/v1")) == "http://env-proxy:3128"
    assert proxy_for(upstream("http://vllm.models.svc:8000/v1", proxy="http://own:1")) == "http://own:1"
