"""A backend that can start only so many jobs at once (a web worker's accounts) is pulled by what
it can start: a job waits for an account in the queue, not inside a worker; when none frees within
the queue wait the client gets 429 with Retry-After. And what only the upstream knows before the
first token (the model it used, headers) reaches the client.

A real edge and a real worker process (tests/contract/fake_worker.py with FAKE_ACCOUNTS) on the
session's NATS, so the session wiretap checks `meta` replies and announcements with `accounts`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import orjson
import pytest
import pytest_asyncio

from libs.devproc import Proc, free_port, spawn_python_service
from tests.conftest import AUTH_KEY, Stack, service_env, start_edge, wait_for_models

MODEL = "fake-accounts"


@pytest.fixture(scope="module")
def one_account_worker(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A worker of capacity 4 whose backend holds one account: one job at a time."""
    events = tmp_path_factory.mktemp("admission") / "events.jsonl"
    port = free_port()
    env = service_env(stack.nats_url, PORT=str(port), WORKER_POOL="admission", WORKER_CAPACITY="4",
                      WORKER_ID="admission-1", FAKE_KIND="chat", FAKE_ACCOUNTS="1", FAKE_MODEL=MODEL,
                      FAKE_EVENTS_FILE=str(events))
    proc: Proc = spawn_python_service("admission-worker", "tests.contract.fake_worker", env=env,
                                      log_dir=stack.log_dir, health_url=f"http://127.0.0.1:{port}/readyz")
    try:
        yield events
    finally:
        proc.stop()


@pytest_asyncio.fixture
async def client(stack: Stack, one_account_worker: Path) -> AsyncIterator[httpx.AsyncClient]:
    await wait_for_models(stack, {MODEL})
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30,
                                 headers={"authorization": f"Bearer {AUTH_KEY}"}) as http:
        yield http


def chat(fake: dict[str, object], stream: bool = False) -> dict[str, object]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": stream, "fake": fake}


def started(events: Path) -> list[dict[str, object]]:
    lines = events.read_bytes().splitlines() if events.exists() else []
    return [e for e in map(orjson.loads, lines) if e["event"] == "started"]


async def test_jobs_beyond_the_accounts_wait_in_the_queue_and_all_succeed(
    client: httpx.AsyncClient, one_account_worker: Path,
) -> None:
    before = len(started(one_account_worker))
    answers = await asyncio.gather(*(client.post("/chat/completions", json=chat({"gap": 0.05})) for _ in range(4)))
    assert [a.status_code for a in answers] == [200] * 4
    runs = started(one_account_worker)[before:]
    assert len(runs) == 4
    # capacity 4 but one account: the runtime pulled one job at a time (the fake fails a job
    # that arrives with its account busy, and records how many ran at once)
    assert [r["concurrent"] for r in runs] == [1] * 4  # itself alone


async def test_no_account_free_within_the_queue_wait_is_a_429_with_retry_after(
    client: httpx.AsyncClient,
) -> None:
    long = asyncio.create_task(client.post("/chat/completions", json=chat({"delay_first": 3.0})))
    await asyncio.sleep(0.3)  # the long one holds the account
    refused = await client.post("/chat/completions", json=chat({}))
    assert refused.status_code == 429, refused.text
    error = refused.json()["error"]
    assert error["code"] == "accounts_busy" and error["type"] == "rate_limit_error"
    assert float(refused.headers["retry-after"]) >= 1
    assert (await long).status_code == 200


async def test_the_model_the_upstream_used_and_its_headers_reach_the_client(client: httpx.AsyncClient) -> None:
    meta = {"model": "upstream-slug-7", "headers": {"x-switchyard-conversation": "new",
                                                    "x-other": "dropped", "x-switchyard-bad": "a\r\nb"}}
    whole = await client.post("/chat/completions", json=chat({"meta": meta}))
    assert whole.status_code == 200
    assert whole.json()["model"] == "upstream-slug-7"
    assert whole.headers["x-switchyard-conversation"] == "new"
    assert "x-other" not in whole.headers and "x-switchyard-bad" not in whole.headers
    async with client.stream("POST", "/chat/completions", json=chat({"meta": meta}, stream=True)) as streamed:
        assert streamed.headers["x-switchyard-conversation"] == "new"
        chunks = [orjson.loads(line[6:]) async for line in streamed.aiter_lines()
                  if line.startswith("data: {")]
    assert chunks and {c["model"] for c in chunks} == {"upstream-slug-7"}


async def test_a_full_queue_is_refused_at_once(private_nats: Proc, tmp_path: Path) -> None:
    """MAX_QUEUED_PER_POOL bounds a pool's queue: past it a request is answered at once (429 for
    a pool of accounts), never dropped nor kept waiting; the queued ones all succeed. On a NATS of
    its own: the bound is the stream's, and would hold for every pool of the session's."""
    edge = start_edge(private_nats.url, tmp_path, name="edge-bounded", MAX_QUEUED_PER_POOL="2",
                      SY_TIMEOUT_QUEUE_WAIT="100", SY_TIMEOUT_CONFIRM_WINDOW="0")  # the edge makes the stream
    port = free_port()
    worker = spawn_python_service(
        "bounded-worker", "tests.contract.fake_worker", log_dir=tmp_path,
        env=service_env(private_nats.url, PORT=str(port), WORKER_POOL="bounded", WORKER_CAPACITY="4",
                        WORKER_ID="bounded-1", FAKE_KIND="chat", FAKE_ACCOUNTS="1", FAKE_MODEL=MODEL),
        health_url=f"http://127.0.0.1:{port}/readyz")
    try:
        async with httpx.AsyncClient(base_url=edge.url + "/v1", timeout=30,
                                     headers={"authorization": f"Bearer {AUTH_KEY}"}) as http:
            for _ in range(200):
                if MODEL in {m["id"] for m in (await http.get("/models")).json()["data"]}:
                    break
                await asyncio.sleep(0.05)
            started = time.monotonic()
            answers = await asyncio.gather(*(http.post("/chat/completions", json=chat({"delay_first": 1.0}))
                                             for _ in range(5)))
            refused = [a for a in answers if a.status_code != 200]
            assert sorted(a.status_code for a in answers) == [200, 200, 429, 429, 429]
            assert all(a.json()["error"]["code"] == "accounts_busy" for a in refused)
            assert all(float(a.headers["retry-after"]) >= 1 for a in refused)
            assert time.monotonic() - started < 5  # the refused ones did not wait out a queue wait
    finally:
        edge.stop()
        worker.stop()
