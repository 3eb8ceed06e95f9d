"""Usage records end to end, on a NATS of this module's own with two edges: each finished request's
record says what the client received (streamed, not streamed, embeddings, a client gone mid-stream,
an upstream failure, a deadline, a length cut); /admin/keys/{id}/usage reads them from either edge;
the hourly aggregates add up across both edges with no double count, also after a restart; the
retention reaches the stream; no secret in a record or a log line."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import orjson
import pytest

import proto
from libs.devproc import Proc, free_port, start_nats_server
from libs.tokens import estimate_tokens
from libs.usage import decode_entry, encode_records
from services.edge.usage import ensure_usage_stream
from services.edge.usage_hourly import HourlyAggregator, ensure_hourly_bucket
from tests.conftest import (
    AUTH_KEY,
    SANDBOX_KEY,
    TIME_SCALE,
    start_edge,
    start_embeddings_worker,
    start_worker_proc,
)
from tests.wiretap import Wiretap

ADMIN_KEY = "admin-usage-key-5e4d3c2b1a09"
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
USER = {"authorization": f"Bearer {AUTH_KEY}"}
PREFIX = "swu_"  # a managed key's prefix: not a shape libs/secrets.py scrubs, so a leak would show
RETENTION_DAYS = "2"
MODEL = "sandbox-chat"
EMBEDDING_MODEL = "text-embedding-3-small"
FANOUT_MODEL = "fanout-usage"  # routed to pool fanout by the test edges' SY_ROUTES (fanout-*)
MADE_KEYS: list[str] = []  # every managed key the tests made: none may show in a log


@pytest.fixture(scope="module")
def usage_nats(log_dir: Path) -> Iterator[Proc]:
    proc = start_nats_server(log_dir=log_dir / "usage-nats", store_dir=log_dir / "usage-nats" / "js")
    yield proc
    proc.stop()


def _edge(nats_url: str, log_dir: Path, name: str, retention: str = RETENTION_DAYS) -> Proc:
    return start_edge(nats_url, log_dir, name=name, ADMIN_KEY=ADMIN_KEY, API_KEY_PREFIX=PREFIX,
                      USAGE_RETENTION_DAYS=retention, SY_TIMEOUT_FIRST_TOKEN=str(0.5 / TIME_SCALE),
                      SY_TIMEOUT_KEEPALIVE=str(30 / TIME_SCALE))


def fanout_config(log_dir: Path, sandbox_url: str) -> Path:
    config = log_dir / "usage-fanout.toml"
    config.write_text(f"[[upstreams]]\nname = 'chat-only'\nbase_url = '{sandbox_url}/v1'\napi_key = '{SANDBOX_KEY}'\n"
                      f"models = ['{FANOUT_MODEL}']\nnative_n = false\ncompletions = false\n")
    return config


class Topology:
    def __init__(self, nats_url: str, log_dir: Path, edges: list[Proc], others: list[Proc]) -> None:
        self.nats_url, self.log_dir, self.edges, self.others = nats_url, log_dir, edges, others
        self.past_logs: list[Path] = []

    def logs(self) -> list[Path]:
        return [*self.past_logs, *(p.log_path for p in [*self.edges, *self.others])]


@pytest.fixture(scope="module")
def topo(usage_nats: Proc, sandbox: Proc, log_dir: Path) -> Iterator[Topology]:
    # the module's own NATS: the session's wiretap is not on it, so one of our own checks it.
    # The edges first: they make the job stream the workers wait for
    edges = [_edge(usage_nats.url, log_dir, "usage-edge-a"), _edge(usage_nats.url, log_dir, "usage-edge-b")]
    others = [
        start_worker_proc(usage_nats.url, sandbox.url, log_dir, name="usage-openai", pool="openai", models=MODEL),
        start_embeddings_worker(usage_nats.url, sandbox.url, log_dir, name="usage-embeddings"),
        # a chat-only upstream without `n`: a request fans out into several jobs
        start_worker_proc(usage_nats.url, sandbox.url, log_dir, name="usage-fanout", pool="fanout", models="unused",
                          OPENAI_BASE_URL="", OPENAI_WORKER_CONFIG=str(fanout_config(log_dir, sandbox.url))),
    ]
    topo = Topology(usage_nats.url, log_dir, edges, others)
    yield topo
    for proc in [*topo.edges, *others]:
        proc.stop()


@pytest.fixture(scope="module")
async def tap(topo: Topology) -> Any:
    wiretap = Wiretap()
    nc = await nats.connect(topo.nats_url)
    await wiretap.attach(nc)
    yield wiretap
    await nc.close()


async def wait_models(client: httpx.AsyncClient, edge: Proc, models: set[str]) -> None:
    deadline = time.monotonic() + 15
    while True:
        listed = {m["id"] for m in (await client.get(edge.url + "/v1/models", headers=USER)).json()["data"]}
        if models <= listed:
            return
        assert time.monotonic() < deadline, f"models {models - listed} never live on {edge.url}"
        await asyncio.sleep(0.05)


@pytest.fixture
async def client(topo: Topology) -> Any:
    async with httpx.AsyncClient(timeout=20) as c:
        for edge in topo.edges:
            await wait_models(c, edge, {MODEL, EMBEDDING_MODEL, FANOUT_MODEL})
        yield c


async def record_of(client: httpx.AsyncClient, edge: Proc, request_id: str, key: str = "static-1",
                    within: float = 5.0) -> dict[str, Any]:
    """The usage record of one request, read back through the admin API (polled: records are published
    in batches off the request's path)."""
    deadline = time.monotonic() + within
    while True:
        got = await client.get(f"{edge.url}/admin/keys/{key}/usage", headers=ADMIN,
                               params={"start": time.time() - 600})
        assert got.status_code == 200, got.text
        found = [r for r in got.json()["data"] if r["request_id"] == request_id]
        if found:
            assert len(found) == 1, found
            return found[0]
        assert time.monotonic() < deadline, f"no usage record for {request_id}"
        await asyncio.sleep(0.05)


def sse_events(raw: bytes) -> list[dict[str, Any]]:
    events = []
    for line in raw.decode().splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            events.append(orjson.loads(line[6:]))
    return events


async def test_a_streamed_answer_is_recorded_as_the_client_got_it(topo: Topology, client: httpx.AsyncClient,
                                                                  tap: Wiretap) -> None:
    rid = f"usage-stream-{time.time_ns()}"
    body = {"model": MODEL, "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "count the stream [sandbox tokens=12]"}]}
    got = await client.post(topo.edges[0].url + "/v1/chat/completions", json=body,
                            headers={**USER, "x-request-id": rid})
    assert got.status_code == 200
    usage = sse_events(got.content)[-1]["usage"]
    record = await record_of(client, topo.edges[1], rid)  # read through the other edge
    assert (record["prompt_tokens"], record["completion_tokens"]) == (usage["prompt_tokens"],
                                                                      usage["completion_tokens"])
    assert record["completion_tokens"] == 12 and record["estimated"] is False
    assert record["status"] == 200 and record["end_reason"] == "stop"
    assert (record["key"], record["model"], record["pool"], record["route"]) == (
        "static-1", MODEL, "openai", "chat.completions")
    assert record["ended_at"] >= record["started_at"] and record["duration_ms"] >= 0
    on_bus = [r for m in tap.messages if m[0] == "switchyard.v1.usage" for r in m[1]["records"]]
    assert [r for r in on_bus if r["request_id"] == rid], "the record on the bus, checked against its schema"


async def test_a_non_streamed_answer_and_an_embedding(topo: Topology, client: httpx.AsyncClient) -> None:
    rid = f"usage-json-{time.time_ns()}"
    got = await client.post(topo.edges[0].url + "/v1/chat/completions", headers={**USER, "x-request-id": rid},
                            json={"model": MODEL, "messages": [{"role": "user", "content": "hi [sandbox tokens=7]"}]})
    assert got.status_code == 200
    usage = got.json()["usage"]
    record = await record_of(client, topo.edges[0], rid)
    assert (record["prompt_tokens"], record["completion_tokens"], record["estimated"]) == (
        usage["prompt_tokens"], usage["completion_tokens"], False)
    assert record["end_reason"] == "stop"

    rid = f"usage-embed-{time.time_ns()}"
    got = await client.post(topo.edges[1].url + "/v1/embeddings", headers={**USER, "x-request-id": rid},
                            json={"model": EMBEDDING_MODEL, "input": ["one text", "and another one"]})
    assert got.status_code == 200
    record = await record_of(client, topo.edges[0], rid)
    assert record["prompt_tokens"] == got.json()["usage"]["prompt_tokens"] > 0
    assert record["completion_tokens"] == 0 and record["route"] == "embeddings" and record["pool"] == "embeddings"


async def test_a_client_gone_mid_stream_is_recorded_with_what_it_received(
    topo: Topology, client: httpx.AsyncClient,
) -> None:
    rid = f"usage-gone-{time.time_ns()}"
    body = {"model": MODEL, "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "a long one [sandbox tokens=400 token_delay_ms=20]"}]}
    received = ""
    chunks = 0
    async with client.stream("POST", topo.edges[0].url + "/v1/chat/completions", json=body,
                             headers={**USER, "x-request-id": rid}) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                for choice in orjson.loads(line[6:])["choices"]:
                    received += choice["delta"].get("content") or ""
                chunks += 1
                if chunks == 8:
                    break
    record = await record_of(client, topo.edges[0], rid)
    assert record["status"] == 499 and record["end_reason"] == "client_gone" and record["estimated"] is True
    # what the edge sent before it saw the disconnect (well under a second at 20 ms a token)
    least = estimate_tokens(received)
    assert least <= record["completion_tokens"] <= least + 20, (record["completion_tokens"], least)
    assert record["completion_tokens"] < 400 / 2


async def test_failures_deadlines_and_length_cuts_say_why(topo: Topology, client: httpx.AsyncClient) -> None:
    async def ask(content: str, **extra: Any) -> tuple[int, dict[str, Any]]:
        rid = f"usage-end-{time.time_ns()}"
        got = await client.post(topo.edges[1].url + "/v1/chat/completions", headers={**USER, "x-request-id": rid},
                                json={"model": MODEL, "messages": [{"role": "user", "content": content}], **extra})
        return got.status_code, await record_of(client, topo.edges[1], rid)

    status, record = await ask("fail [sandbox status=500]")
    assert status >= 500 and record["status"] == status and record["end_reason"] == "upstream_error"
    assert record["completion_tokens"] == 0
    # the first-token limit is 60 s x SY_TIME_SCALE (0.1): 6 s
    # a streamed upstream call is held to the first-token limit (FIRST_TOKEN below)
    status, record = await ask("wait [sandbox first_token_ms=1500]", stream=True)
    assert status == 504 and record["status"] == 504 and record["end_reason"] == "timeout", (status, record)
    # not streamed, one job (of one prompt) answered and the other failed: the client got an error
    # and no completion, whatever the first job produced
    rid = f"usage-end-{time.time_ns()}"
    got = await client.post(topo.edges[1].url + "/v1/completions", headers={**USER, "x-request-id": rid},
                            json={"model": FANOUT_MODEL, "prompt": ["fine [sandbox tokens=30]",
                                                                "bad [sandbox latency_ms=300 status=500]"]})
    record = await record_of(client, topo.edges[1], rid)
    assert got.status_code >= 500 and record["end_reason"] == "upstream_error", (got.status_code, record)
    assert record["completion_tokens"] == 0, record
    status, record = await ask("cut [sandbox tokens=20]", max_tokens=5)
    assert status == 200 and record["end_reason"] == "length" and record["completion_tokens"] == 5


async def test_records_per_key_and_period_and_their_bounds(topo: Topology, client: httpx.AsyncClient) -> None:
    made = await client.post(topo.edges[0].url + "/admin/keys", headers=ADMIN, json={"name": "usage"})
    key, key_id = made.json()["key"], made.json()["id"]
    MADE_KEYS.append(key)
    started = time.time()
    for i in range(3):
        got = await client.post(topo.edges[i % 2].url + "/v1/chat/completions",
                                headers={"authorization": f"Bearer {key}", "x-request-id": f"usage-key-{i}"},
                                json={"model": MODEL, "messages": [{"role": "user", "content": f"n {i}"}]})
        assert got.status_code == 200
    record = await record_of(client, topo.edges[1], "usage-key-2", key=key_id)
    assert record["key"] == key_id
    url = f"{topo.edges[1].url}/admin/keys/{key_id}/usage"
    listed = (await client.get(url, headers=ADMIN, params={"start": started - 1})).json()
    # in the order stored: each edge publishes its records in batches, so two edges' interleave
    assert sorted(r["request_id"] for r in listed["data"]) == [f"usage-key-{i}" for i in range(3)]
    assert listed["has_more"] is False
    two = (await client.get(url, headers=ADMIN, params={"start": started - 1, "limit": 2})).json()
    assert len(two["data"]) == 2 and two["has_more"] is True
    rfc3339 = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started - 3600))
    assert len((await client.get(url, headers=ADMIN, params={"start": rfc3339})).json()["data"]) == 3
    # a period before the requests: none of them
    assert (await client.get(url, headers=ADMIN, params={"start": started - 600, "end": started - 1})).json()[
        "data"] == []
    for params, param in (({"start": "yesterday"}, "start"), ({"limit": "0"}, "limit"), ({"group": "day"}, "group"),
                          ({"start": "10", "end": "5"}, "start"), ({"end": "nan"}, "end")):
        bad = await client.get(url, headers=ADMIN, params=params)
        assert bad.status_code == 400 and bad.json()["error"]["param"] == param, (params, bad.text)
    assert (await client.get(url, headers={"authorization": "Bearer wrong"})).status_code == 401
    assert (await client.get(f"{topo.edges[0].url}/admin/keys/a.b/usage", headers=ADMIN)).status_code == 404
    # no key, admin key or upstream key in any record
    everything = (await client.get(url, headers=ADMIN, params={"start": started - 1})).content
    for secret in (key, ADMIN_KEY, AUTH_KEY, SANDBOX_KEY):
        assert secret.encode() not in everything
    await client.delete(f"{topo.edges[0].url}/admin/keys/{key_id}", headers=ADMIN)


async def hourly_totals(client: httpx.AsyncClient, edge: Proc, key: str, since: float) -> dict[str, int]:
    got = await client.get(f"{edge.url}/admin/keys/{key}/usage", headers=ADMIN,
                           params={"group": "hour", "start": since})
    assert got.status_code == 200, got.text
    totals = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0}
    for hour in got.json()["data"]:
        for model in hour["models"].values():
            for name in totals:
                totals[name] += model[name]
    return totals


async def test_hourly_aggregates_add_up_across_edges_and_a_restart(topo: Topology, client: httpx.AsyncClient) -> None:
    made = await client.post(topo.edges[0].url + "/admin/keys", headers=ADMIN, json={"name": "hourly"})
    key, key_id = made.json()["key"], made.json()["id"]
    MADE_KEYS.append(key)
    auth = {"authorization": f"Bearer {key}"}
    since = time.time() - 3600

    async def burst(n: int) -> None:
        replies = await asyncio.gather(*(
            client.post(topo.edges[i % len(topo.edges)].url + "/v1/chat/completions", headers=auth,
                        json={"model": MODEL, "messages": [{"role": "user", "content": f"hourly {i}"}]})
            for i in range(n)))
        assert all(r.status_code == 200 for r in replies)

    await burst(20)
    # one edge restarts (its queue flushed at shutdown, its consumer's batch handed over), with a
    # new retention: the operator's change reaches the stream and the bucket
    old = topo.edges.pop()
    old.stop()
    topo.past_logs.append(old.log_path)
    topo.edges.append(_edge(topo.nats_url, topo.log_dir, "usage-edge-c", retention="3"))
    await wait_models(client, topo.edges[-1], {MODEL})
    await burst(20)

    deadline = time.monotonic() + 5
    while len(records := (await client.get(f"{topo.edges[0].url}/admin/keys/{key_id}/usage", headers=ADMIN,
                                           params={"start": since})).json()["data"]) < 40:
        assert time.monotonic() < deadline, len(records)  # stored a batch window after the answers
        await asyncio.sleep(0.05)
    assert len(records) == 40
    want = {"requests": 40, "prompt_tokens": sum(r["prompt_tokens"] for r in records),
            "completion_tokens": sum(r["completion_tokens"] for r in records)}
    deadline = time.monotonic() + 10
    while (got := await hourly_totals(client, topo.edges[0], key_id, since)) != want:
        assert time.monotonic() < deadline, (got, want)
        await asyncio.sleep(0.1)
    assert await hourly_totals(client, topo.edges[-1], key_id, since) == want
    await client.delete(f"{topo.edges[0].url}/admin/keys/{key_id}", headers=ADMIN)

    nc = await nats.connect(topo.nats_url)
    try:
        js = nc.jetstream()
        assert (await js.stream_info(proto.USAGE_STREAM)).config.max_age == 3 * 86400
        assert (await js.stream_info(f"KV_{proto.USAGE_HOURLY_BUCKET}")).config.max_age == 3 * 86400
        consumer = await js.consumer_info(proto.USAGE_STREAM, proto.USAGE_CONSUMER)
        assert consumer.num_pending == 0
    finally:
        await nc.close()


async def test_zz_no_secret_in_any_log_and_every_record_matched_the_contract(topo: Topology, tap: Wiretap) -> None:
    assert not tap.violations, tap.violations[:5]
    assert tap.seen["switchyard.v1.usage"] > 0
    for path in topo.logs():
        text = path.read_text(errors="replace")
        for secret in (ADMIN_KEY, AUTH_KEY, SANDBOX_KEY, *MADE_KEYS):
            assert secret not in text, f"a secret is in {path}"
    assert len(MADE_KEYS) == 2


async def _totals(kv: Any) -> dict[tuple[str, str], int]:
    """(key, model) → requests, over every hourly entry."""
    totals: dict[tuple[str, str], int] = {}
    for name in await kv.keys():
        entry = decode_entry((await kv.get(name)).value, "", "")
        for model, counts in entry["models"].items():
            totals[(entry["key"], model)] = totals.get((entry["key"], model), 0) + counts["requests"]
    return totals


class _StopsMidBatch(HourlyAggregator):
    """Writes the first entry of its batch, then stops (as an edge killed mid-batch): nothing acked."""

    def __init__(self) -> None:
        super().__init__(ack_wait=1.0)
        self.stopped = asyncio.Event()

    async def _write(self, *args: Any) -> None:
        await super()._write(*args)
        self.stopped.set()
        raise RuntimeError("killed mid-batch")


class _StopsBeforeAck(HourlyAggregator):
    """Writes every entry of its batch, then stops before acking it."""

    def __init__(self) -> None:
        super().__init__(ack_wait=1.0)
        self.stopped = asyncio.Event()

    async def _ack(self, msgs: list[Any]) -> None:
        self.stopped.set()
        raise RuntimeError("killed before the ack")


async def test_a_batch_delivered_again_is_not_counted_twice(log_dir: Path) -> None:
    server = start_nats_server(log_dir=log_dir / "usage-redelivery", store_dir=log_dir / "usage-redelivery" / "js")
    nc = await nats.connect(server.url)
    try:
        js = nc.jetstream()
        await ensure_usage_stream(js, 1)
        kv = await ensure_hourly_bucket(js, 1)
        want: dict[tuple[str, str], int] = {}

        async def publish(n: int) -> None:
            """n messages of three records each (an edge's records of one key in one window)."""
            now = time.time()
            for i in range(n):
                key = f"k{i % 3}"
                rows = [(f"r{i}-{j}", key, f"m{j % 2}", "openai", None, "chat.completions", 5, j, False, 200,
                         "stop", now, now) for j in range(3)]
                await js.publish(proto.usage_subject(key), encode_records(rows))
                for row in rows:
                    want[(key, row[2])] = want.get((key, row[2]), 0) + 1

        for crashing in (_StopsMidBatch(), _StopsBeforeAck()):
            await publish(10)
            crashing.start(js, kv)
            await asyncio.wait_for(crashing.stopped.wait(), 10)
            await crashing.stop(within=1)
            healthy = HourlyAggregator(ack_wait=1.0)  # takes the batch over once its ack_wait passed
            healthy.start(js, kv)
            try:
                deadline = time.monotonic() + 10
                while True:
                    info = await js.consumer_info(proto.USAGE_STREAM, proto.USAGE_CONSUMER)
                    if info.num_pending == 0 and info.num_ack_pending == 0:
                        break
                    assert time.monotonic() < deadline, info
                    await asyncio.sleep(0.05)
            finally:
                await healthy.stop(within=1)
            assert (await _totals(kv)) == want
        # what a crashed aggregator held went out again (more deliveries than messages; how many it
        # held depends on what its first pull got), and every message is acked once folded
        assert info.delivered.stream_seq == 20 and info.delivered.consumer_seq > 20
        assert info.ack_floor.stream_seq == 20
    finally:
        await nc.close()
        server.stop()


async def test_records_wait_out_a_nats_outage(log_dir: Path) -> None:
    """Requests refused while NATS is away (503) are usage too: their records are held and stored
    once it is back, each once (a message nats-py kept through the reconnect and published again
    by the flusher is de-duplicated), none dropped."""
    run_dir, port = log_dir / "usage-outage", free_port()
    server = start_nats_server(log_dir=run_dir, store_dir=run_dir / "js", port=port)
    edge = start_edge(server.url, log_dir, name="usage-edge-outage", ADMIN_KEY=ADMIN_KEY)
    try:
        server.stop()
        async with httpx.AsyncClient(timeout=20) as client:
            rids = [f"usage-outage-{i}-{time.time_ns()}" for i in range(3)]
            for rid in rids:
                got = await client.post(edge.url + "/v1/chat/completions", headers={**USER, "x-request-id": rid},
                                        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
                assert got.status_code == 503, got.text
            # the flusher gives up on that batch's acks and keeps it to try again (an outage longer
            # than what nats-py buffers through a reconnect)
            deadline = time.monotonic() + 15
            while "trying again" not in edge.log_path.read_text(errors="replace"):
                assert time.monotonic() < deadline, "the flusher never said it would try again"
                await asyncio.sleep(0.1)
            server = start_nats_server(log_dir=run_dir, store_dir=run_dir / "js", port=port)
            for rid in rids:
                record = await record_of(client, edge, rid, within=15)
                assert record["status"] == 503 and record["end_reason"] == "upstream_error"
            exposed = (await client.get(edge.url + "/metrics")).text.splitlines()
            assert "switchyard_edge_usage_records_dropped_total 0.0" in exposed
    finally:
        edge.stop()
        server.stop()
