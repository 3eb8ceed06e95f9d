"""libs/secrets.py: held credentials are scrubbed verbatim everywhere text leaves a worker."""

from __future__ import annotations

import base64
import logging
import sys
from collections.abc import Iterator
from urllib.parse import quote

import orjson
import pytest

from libs import secrets
from libs.errors import BusError, UpstreamError, UpstreamRateLimited, UpstreamTimeout
from libs.logs import JsonFormatter, redact
from libs.openai_upstream.call import error_for_status
from libs.worker_metrics import WorkerMetrics

AZURE = "3f9a1c27e4b8d6050a7e2c914b6d8f03"
ODD_KEYS = [AZURE, "gsk_Q7vT2mXc9LpR4sWz8NbK1yHd6FjG3aUe5oIq0rEt", "AIzaSyB3x-Qk9v_T7mZp2LrW8cN4sJd6HfY1aGe",
            "hf_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789", "xai-Zq4Wm8Tn2Vb6Yc0Xd5Re9Uf3Gh7Jk1Lp",
            "k3y+with/slashes=and spaces"]


@pytest.fixture(autouse=True)
def empty_registry() -> Iterator[None]:
    secrets.forget_all()
    yield
    secrets.forget_all()


@pytest.mark.parametrize("key", ODD_KEYS)
def test_a_held_key_is_scrubbed_verbatim_and_url_encoded(key: str) -> None:
    text = f"Request used API key: {key}. Retry at /v1?key={quote(key, safe='')} or {quote(key, safe='/:')}"
    assert key in secrets.scrub(text) or quote(key, safe="") in secrets.scrub(text)  # patterns alone miss it
    secrets.hold(key)
    out = secrets.scrub(text)
    assert key not in out and quote(key, safe="") not in out and quote(key, safe="/:") not in out
    assert out.startswith("Request used API key: [redacted].")


def test_the_longest_held_value_wins() -> None:
    secrets.hold("abcdefgh12345678")
    secrets.hold("abcdefgh")
    assert secrets.scrub("x abcdefgh12345678 y abcdefgh z") == "x [redacted] y [redacted] z"


def test_short_values_are_not_held() -> None:
    """A value under MIN_SECRET_LENGTH is a placeholder: scrubbing it would mangle ordinary text."""
    secrets.hold("sandbox")
    secrets.hold("")
    secrets.hold(None)
    assert secrets.scrub("model sandbox-chat") == "model sandbox-chat"


def test_proxy_url_credentials_are_held() -> None:
    secrets.hold_url("http://proxyuser:pr0xy%2Fpass@10.0.0.1:3128")
    basic = base64.b64encode(b"proxyuser:pr0xy/pass").decode()
    text = f"via http://proxyuser:pr0xy%2Fpass@10.0.0.1:3128 pass=pr0xy/pass Proxy-Authorization: Basic {basic}"
    out = secrets.scrub(text)
    assert "pr0xy" not in out and basic not in out
    assert "10.0.0.1:3128" in out  # the proxy's address is not a secret


def test_a_url_without_credentials_holds_nothing() -> None:
    secrets.hold_url("http://10.0.0.1:3128")
    secrets.hold_url(None)
    assert secrets.scrub("http://10.0.0.1:3128") == "http://10.0.0.1:3128"


def test_patterns_still_apply() -> None:
    assert "sk-abcdef123456" not in secrets.scrub("key sk-abcdef123456")
    assert redact("Authorization: Bearer abcdef0123456789") == "Authorization: [redacted] [redacted]"


def test_log_lines_and_tracebacks_are_scrubbed() -> None:
    secrets.hold(AZURE)
    formatter = JsonFormatter("test")
    try:
        raise RuntimeError(f"upstream said {AZURE}")
    except RuntimeError:
        record = logging.LogRecord("t", logging.ERROR, __file__, 1, "key %s", (AZURE,), sys.exc_info())
    line = formatter.format(record)
    assert AZURE not in line
    assert orjson.loads(line)["msg"] == "key [redacted]"


def test_errors_on_the_bus_are_scrubbed() -> None:
    """`to_wire` is where every worker's error leaves for the edge, whichever path made it."""
    secrets.hold(AZURE)
    wire = UpstreamError(f"cannot call upstream: {AZURE}").to_wire()
    assert AZURE not in orjson.dumps(wire).decode()


@pytest.mark.parametrize("status", [400, 404, 422, 429, 500, 502, 503])
def test_upstream_error_bodies_are_scrubbed_before_they_are_cut(status: int) -> None:
    secrets.hold(AZURE)
    body = orjson.dumps({"error": {"message": "x" * 460 + f" Request used API key: {AZURE}."}})
    err = error_for_status(status, body, {}, "primary")
    assert AZURE not in err.message and AZURE[:8] not in err.message


def test_503_retry_after_is_passed_on_in_seconds_or_as_a_date() -> None:
    seconds = error_for_status(503, b"{}", {"retry-after": "7"}, "u")
    assert seconds.headers() == {"retry-after": "7", "retry-after-ms": "7000"}
    dated = error_for_status(503, b"{}", {"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, "u")
    assert dated.headers() == {"retry-after": "1", "retry-after-ms": "1"}  # a date in the past: at once
    assert error_for_status(502, b"{}", {"retry-after": "7"}, "u").headers() == {}
    assert isinstance(error_for_status(429, b"{}", {}, "u"), UpstreamRateLimited)


def test_upstream_errors_are_counted_by_upstream() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    metrics = WorkerMetrics(CollectorRegistry(), "p")
    err = UpstreamError("x")
    err.upstream = "primary"
    metrics.count_upstream_error(err)
    metrics.count_upstream_error(UpstreamTimeout("no upstream to blame"))  # e.g. the runtime's own limit
    text = generate_latest(metrics.registry).decode()
    assert 'switchyard_worker_upstream_errors_total{code="upstream_error",upstream="primary"} 1.0' in text
    assert 'switchyard_worker_upstream_errors_total{code="upstream_timeout",upstream=""} 1.0' in text


async def test_the_edge_s_keys_and_the_bus_credentials_are_held() -> None:
    from libs.bus import connect
    from services.edge.middleware import StaticKeyStore

    StaticKeyStore(["0f3c9a7e5b1d4c2a8e6f0b9d7c5a3e1f"])  # an edge key of no recognisable shape
    with pytest.raises(BusError):  # nothing listens there; the credentials are held all the same
        await connect("nats://bususer:bus-pass-7f3a9c@127.0.0.1:1", "t", initial_wait=0.2)
    line = redact("key 0f3c9a7e5b1d4c2a8e6f0b9d7c5a3e1f, bus bus-pass-7f3a9c")
    assert "0f3c9a7e5b1d4c2a8e6f0b9d7c5a3e1f" not in line and "bus-pass-7f3a9c" not in line


def test_an_owners_rotating_secrets_replace_its_earlier_ones() -> None:
    for n in range(200):  # a web account whose cookie the upstream renews on every conversation
        secrets.hold_as("bing-account.a", [f"rotating-cookie-{n:04d}", "steady-cookie-value"])
    assert secrets.scrub("rotating-cookie-0199 steady-cookie-value") == "[redacted] [redacted]"
    assert secrets.scrub("rotating-cookie-0007") == "rotating-cookie-0007"  # no longer held: bounded
    assert len(secrets._owned["bing-account.a"]) == 2
    secrets.hold_as("bing-account.b", ["other-account-cookie"])
    assert secrets.scrub("rotating-cookie-0199 other-account-cookie") == "[redacted] [redacted]"


def test_a_calls_own_secrets_are_scrubbed_without_being_held() -> None:
    text = "Bing said: _RwBf-like value=caller-cookie/x= and caller-cookie%2Fx%3D"
    assert secrets.scrub_also(text, ["caller-cookie/x="]).count("[redacted]") == 2
    assert "caller-cookie" in secrets.scrub(text)  # nothing was held process-wide
