"""A managed key's limits across two edges on one NATS (services/edge/limits.py): rpm admits
exactly N across both; tokens are reserved then settled; budgets stop the key on both edges and
outlive an edge's restart; max_concurrent holds across edges and a killed edge's slot lapses;
models patterns; OpenAI's headers on every answer; a client gone mid-stream settles; no secret
in the logs. The module has a NATS of its own: its keys never reach the session's edges."""

from __future__ import annotations

import asyncio
import re
import signal
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import nats
import orjson
import pytest
import pytest_asyncio

from libs.devproc import Proc, start_nats_server
from services.edge.limits import LIMITS_BUCKET
from tests.conftest import AUTH_KEY, TIME_SCALE, start_edge, start_worker_proc

ADMIN_KEY = "admin-limits-key-5e4d3c2b1a09"
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
PREFIX = "swk_"  # not a shape libs/secrets.py scrubs: the log check sees what the code writes
TTL = 15.0 * TIME_SCALE  # a dead edge's slots lapse after this (limits.start_limits)
RATE_HEADERS = ("limit", "remaining", "reset")
RETRY_IN = re.compile(r"Please try again in [0-9.hms]+\.$")


@dataclass
class Topology:
    nats_url: str
    a: Proc
    b: Proc
    log_dir: Path
    keys: list[str]


@pytest.fixture(scope="module")
def topology(sandbox: Proc, log_dir: Path) -> Iterator[Topology]:
    here = log_dir / "key_limits"
    started: list[Proc] = []
    try:
        bus = start_nats_server(log_dir=here, store_dir=here / "js")
        started.append(bus)
        # the edges first: they make the job stream the worker waits for
        a = start_edge(bus.url, here, name="limits-edge-a", ADMIN_KEY=ADMIN_KEY, API_KEY_PREFIX=PREFIX)
        started.append(a)
        b = start_edge(bus.url, here, name="limits-edge-b", ADMIN_KEY=ADMIN_KEY, API_KEY_PREFIX=PREFIX)
        started.append(b)
        started.append(start_worker_proc(bus.url, sandbox.url, here, name="limits-openai", pool="openai",
                                         models="sandbox-chat", capacity=64))
        topo = Topology(bus.url, a, b, here, [])
        yield topo
        started[1] = topo.a  # restarted by a test
    finally:
        for proc in reversed(started):
            proc.stop()


@pytest_asyncio.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=200)) as c:
        yield c


def chat(text: str = "hello", *, stream: bool = False, max_tokens: int | None = 20,
         model: str = "sandbox-chat") -> dict[str, object]:
    body: dict[str, object] = {"model": model, "messages": [{"role": "user", "content": text}], "stream": stream}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return body


async def make_key(client: httpx.AsyncClient, topo: Topology, **limits: object) -> str:
    made = await client.post(topo.a.url + "/admin/keys", headers=ADMIN, json={"name": "limits", **limits})
    assert made.status_code == 200, made.text
    key: str = made.json()["key"]
    topo.keys.append(key)
    for edge in (topo.a, topo.b):  # every edge's mirror has it (bounded)
        for _ in range(100):
            got = await client.get(edge.url + "/v1/models", headers={"authorization": f"Bearer {key}"})
            if got.status_code == 200:
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("the key never reached " + edge.url)
    return key


async def post(client: httpx.AsyncClient, edge: Proc, key: str, body: dict[str, object]) -> httpx.Response:
    return await client.post(edge.url + "/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
                             json=body)


async def shared_record(topo: Topology, key: str, client: httpx.AsyncClient) -> dict[str, object]:
    listed = (await client.get(topo.a.url + "/admin/keys", headers=ADMIN)).json()["data"]
    key_id = next(k["id"] for k in listed if k["key"].endswith(key[-4:]))
    nc = await nats.connect(topo.nats_url)
    try:
        entry = await (await nc.jetstream().key_value(LIMITS_BUCKET)).get(key_id)
        record: dict[str, object] = orjson.loads(entry.value or b"{}")
        return record
    finally:
        await nc.close()


def assert_rate_headers(response: httpx.Response, *units: str) -> None:
    """OpenAI's x-ratelimit-* headers of the key's limits (`requests`: rpm, `tokens`: tpm), no others."""
    for unit in ("requests", "tokens"):
        for what in RATE_HEADERS:
            assert (f"x-ratelimit-{what}-{unit}" in response.headers) is (unit in units), (what, unit)
        if unit in units:
            assert re.fullmatch(r"(\d+h)?(\d+m)?[0-9.]+(ms|s)", response.headers[f"x-ratelimit-reset-{unit}"])


async def test_rpm_admits_exactly_n_across_both_edges(topology: Topology, client: httpx.AsyncClient) -> None:
    n = 12
    key = await make_key(client, topology, rpm=n)
    edges = (topology.a, topology.b)
    answers = await asyncio.gather(*(post(client, edges[i % 2], key, chat()) for i in range(3 * n)))
    ok = [r for r in answers if r.status_code == 200]
    refused = [r for r in answers if r.status_code == 429]
    assert len(ok) == n and len(refused) == 2 * n, sorted(r.status_code for r in answers)
    for r in refused:
        error = r.json()["error"]
        assert set(r.json()) == {"error"}
        assert set(error) == {"message", "type", "param", "code"}
        assert (error["type"], error["code"], error["param"]) == ("requests", "rate_limit_exceeded", None)
        assert error["message"].startswith(
            f"Rate limit reached for requests per minute (RPM) on this key: Limit {n}, Used {n}, Requested 1. ")
        assert RETRY_IN.search(error["message"])
        assert 1 <= int(r.headers["retry-after"]) <= 60 and int(r.headers["retry-after-ms"]) >= 1
        assert_rate_headers(r, "requests")
        assert r.headers["x-ratelimit-limit-requests"] == str(n)
        assert r.headers["x-ratelimit-remaining-requests"] == "0"
    for r in ok:
        assert_rate_headers(r, "requests")


async def test_tpm_refuses_once_spent_and_a_long_stream_overspends_by_one_request(
        topology: Topology, client: httpx.AsyncClient) -> None:
    key = await make_key(client, topology, tpm=600)
    refused = None
    for i in range(60):
        r = await post(client, (topology.a, topology.b)[i % 2], key, chat(max_tokens=100))
        if r.status_code == 429:
            refused = r
            break
        assert r.status_code == 200, r.text
    assert refused is not None, "a tpm of 600 never refused"
    assert i >= 10  # settled to what was used (~20 of the ~120 reserved), not the reservation (4 then)
    error = refused.json()["error"]
    assert (error["type"], error["code"]) == ("tokens", "rate_limit_exceeded")
    assert error["message"].startswith("Rate limit reached for tokens per minute (TPM) on this key: Limit 600, ")
    assert_rate_headers(refused, "tokens")

    # a stream with no max_tokens reserves the default (512) and runs to ~2000 tokens: charged in
    # full at its end, past the limit, and nothing more is admitted
    key = await make_key(client, topology, tpm=1000)
    async with client.stream("POST", topology.a.url + "/v1/chat/completions",
                             headers={"authorization": f"Bearer {key}"},
                             json=chat("[sandbox tokens=2000] go", stream=True, max_tokens=None)) as s:
        assert s.status_code == 200
        assert_rate_headers(s, "tokens")
        async for _ in s.aiter_bytes():
            pass
    for edge in (topology.a, topology.b):
        after = await post(client, edge, key, chat(max_tokens=10))
        assert after.status_code == 429 and after.json()["error"]["type"] == "tokens", after.text
        assert after.headers["x-ratelimit-remaining-tokens"] == "0" or edge is topology.b
    shared = await shared_record(topology, key, client)
    used = shared["w"][1][1]  # type: ignore[index]
    assert 1000 < used <= 1000 + 2100  # overspent by that one request, no more


# what the budget tests spend with, and probe with: a smaller request may still fit what is left
SPEND = chat("[sandbox tokens=10] spend", max_tokens=20)
SPEND_RESERVES = (len(orjson.dumps(SPEND)) + 3) // 4 + 20  # libs/tokens.estimate_tokens of the body + max_tokens


async def spend_until_stopped(client: httpx.AsyncClient, topo: Topology, key: str) -> httpx.Response:
    """Spend on both edges until both refuse, and go on refusing for longer than an idle edge
    takes to give its spare quota back (refunds of settled requests sit on the edge that
    settled them until then): the budget is spent, not parked on one edge. Bounded."""
    quiet = 5 * 2.0 * TIME_SCALE  # limits.start_limits: idle
    refused_since: float | None = None
    last: httpx.Response | None = None
    for i in range(400):
        r = await post(client, (topo.a, topo.b)[i % 2], key, SPEND)
        if r.status_code == 200:
            refused_since = None
            continue
        assert r.status_code == 429, r.text
        last = r
        now = time.monotonic()
        refused_since = refused_since or now
        if now - refused_since > quiet:
            return last
        await asyncio.sleep(0.05)
    raise AssertionError("the budget never stopped the key")


async def test_a_total_budget_stops_the_key_on_both_edges_and_survives_a_restart(
        topology: Topology, client: httpx.AsyncClient) -> None:
    key = await make_key(client, topology, budget_total=300)
    refused = await spend_until_stopped(client, topology, key)
    error = refused.json()["error"]
    assert (error["type"], error["code"], error["param"]) == ("insufficient_quota", "insufficient_quota", None)
    assert error["message"].startswith("You exceeded your token budget on this key: Limit 300, ")
    assert int(refused.headers["retry-after"]) >= 1
    for edge in (topology.a, topology.b):
        again = await post(client, edge, key, SPEND)
        assert again.status_code == 429 and again.json()["error"]["code"] == "insufficient_quota"
    total = (await shared_record(topology, key, client))["total"]
    assert 300 - SPEND_RESERVES < total <= 300  # type: ignore[operator]  # short by less than one reservation

    topology.a.stop()
    topology.a = start_edge(topology.nats_url, topology.log_dir, name="limits-edge-a", ADMIN_KEY=ADMIN_KEY,
                            API_KEY_PREFIX=PREFIX)
    again = await post(client, topology.a, key, SPEND)
    assert again.status_code == 429 and again.json()["error"]["code"] == "insufficient_quota", again.text


async def test_a_period_budget_stops_the_key_and_opens_again_after_its_period(
        topology: Topology, client: httpx.AsyncClient) -> None:
    period = 4
    key = await make_key(client, topology, budget_period_tokens=200, budget_period_seconds=period)
    started = time.monotonic()
    refused = await spend_until_stopped(client, topology, key)
    assert refused.json()["error"]["code"] == "insufficient_quota", refused.text
    assert refused.json()["error"]["message"].startswith("You exceeded your token budget for this period on this key")
    assert 1 <= int(refused.headers["retry-after"]) <= period
    for edge in (topology.a, topology.b):
        assert (await post(client, edge, key, SPEND)).status_code == 429
    while True:  # bounded: the period ends
        r = await post(client, topology.b, key, SPEND)
        if r.status_code == 200:
            break
        assert time.monotonic() - started < period + 2, r.text
        await asyncio.sleep(0.1)
    assert time.monotonic() - started >= period - 0.2  # not before its period ended


async def test_max_concurrent_holds_across_edges_and_a_killed_edges_slot_lapses(
        topology: Topology, client: httpx.AsyncClient) -> None:
    key = await make_key(client, topology, max_concurrent=2)
    slow = chat("[sandbox latency_ms=1500] slow")
    first = asyncio.create_task(post(client, topology.a, key, slow))
    second = asyncio.create_task(post(client, topology.b, key, slow))
    await asyncio.sleep(0.4)  # both admitted by now (their answers take 1.5 s)
    third = await post(client, topology.a, key, chat())
    assert third.status_code == 429, third.text
    error = third.json()["error"]
    assert (error["type"], error["code"]) == ("requests", "concurrency_limit_exceeded")
    assert int(third.headers["retry-after"]) >= 1
    assert (await first).status_code == 200
    deadline = time.monotonic() + 1.0  # the slot a finished on edge a is given back at once
    while (r := await post(client, topology.b, key, chat())).status_code != 200:
        assert time.monotonic() < deadline, r.text
        await asyncio.sleep(0.02)
    assert (await second).status_code == 200

    # an edge killed while it holds a slot: the slot counts until its renewal is older than the TTL
    c = start_edge(topology.nats_url, topology.log_dir, name="limits-edge-c", ADMIN_KEY=ADMIN_KEY,
                   API_KEY_PREFIX=PREFIX)
    try:
        for _ in range(100):
            if (await post(client, c, key, chat())).status_code == 200:
                break
        held = [asyncio.create_task(post(client, e, key, chat("[sandbox latency_ms=8000] hold")))
                for e in (topology.a, c)]
        await asyncio.sleep(0.4)
        assert (await post(client, topology.b, key, chat())).status_code == 429
        c.signal(signal.SIGKILL)
        killed = time.monotonic()
        while (r := await post(client, topology.b, key, chat())).status_code != 200:
            assert time.monotonic() - killed < TTL + 1.0, r.text
            await asyncio.sleep(0.05)
        assert time.monotonic() - killed > TTL / 3  # not freed by anything but the lapse
        held[0].cancel()
        await asyncio.gather(*held, return_exceptions=True)
    finally:
        c.stop(grace=1)


async def test_models_patterns(topology: Topology, client: httpx.AsyncClient) -> None:
    key = await make_key(client, topology, models=["gpt-*", "sandbox-c*"])
    assert (await post(client, topology.b, key, chat())).status_code == 200
    narrow = await make_key(client, topology, models=["sandbox-fast"])
    refused = await post(client, topology.b, narrow, chat())
    assert refused.status_code == 403
    assert refused.json() == {"error": {
        "message": "This key is not allowed to use the model 'sandbox-chat'.", "type": "invalid_request_error",
        "param": "model", "code": "model_not_allowed"}}
    case = await make_key(client, topology, models=["Sandbox-*"])  # fnmatch, case-sensitive
    assert (await post(client, topology.a, case, chat())).status_code == 403


async def test_headers_on_every_answer_and_none_for_a_static_key(
        topology: Topology, client: httpx.AsyncClient) -> None:
    key = await make_key(client, topology, rpm=100, tpm=100_000)
    one = await post(client, topology.a, key, chat())
    assert one.status_code == 200
    assert_rate_headers(one, "requests", "tokens")
    assert one.headers["x-ratelimit-limit-requests"] == "100"
    assert one.headers["x-ratelimit-limit-tokens"] == "100000"
    two = await post(client, topology.a, key, chat())
    assert int(two.headers["x-ratelimit-remaining-requests"]) < int(one.headers["x-ratelimit-remaining-requests"])
    assert int(two.headers["x-ratelimit-remaining-tokens"]) < int(one.headers["x-ratelimit-remaining-tokens"])
    async with client.stream("POST", topology.b.url + "/v1/chat/completions",
                             headers={"authorization": f"Bearer {key}"}, json=chat(stream=True)) as s:
        assert s.status_code == 200
        assert_rate_headers(s, "requests", "tokens")
        await s.aread()
    static = await post(client, topology.a, AUTH_KEY, chat())
    assert static.status_code == 200
    assert not [h for h in static.headers if h.startswith("x-ratelimit")]
    unlimited = await make_key(client, topology)
    plain = await post(client, topology.a, unlimited, chat())
    assert plain.status_code == 200 and not [h for h in plain.headers if h.startswith("x-ratelimit")]


async def test_a_client_gone_mid_stream_frees_its_slot_and_is_charged_what_was_delivered(
        topology: Topology, client: httpx.AsyncClient) -> None:
    tpm = 100_000
    key = await make_key(client, topology, max_concurrent=1, tpm=tpm)
    body = chat("[sandbox tokens=400 token_delay_ms=20] long", stream=True, max_tokens=None)
    async with client.stream("POST", topology.a.url + "/v1/chat/completions",
                             headers={"authorization": f"Bearer {key}"}, json=body) as s:
        assert s.status_code == 200
        chunks = 0
        async for _ in s.aiter_lines():
            chunks += 1
            if chunks >= 6:
                break
    deadline = time.monotonic() + 2.0
    second_body = chat(max_tokens=10)
    while (r := await post(client, topology.a, key, second_body)).status_code != 200:
        assert r.json()["error"]["code"] == "concurrency_limit_exceeded"
        assert time.monotonic() < deadline, "the slot of the request whose client went away was never freed"
        await asyncio.sleep(0.02)
    reserve_second = (len(orjson.dumps(second_body)) + 3) // 4 + 10  # libs/tokens.estimate_tokens + max_tokens
    charged_first = tpm - reserve_second - int(r.headers["x-ratelimit-remaining-tokens"])
    assert 0 < charged_first < 512  # what reached the client, neither nothing nor its whole reservation


async def test_no_key_in_the_logs(topology: Topology) -> None:
    assert topology.keys
    for proc in (topology.a, topology.b):
        text = proc.log_path.read_text(errors="replace")
        for secret in (*topology.keys, ADMIN_KEY):
            assert secret not in text, f"a secret is in {proc.log_path}"
