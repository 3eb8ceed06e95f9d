"""Seed 000 (SydneyQt's web API) end to end: its own routes and its OpenAI routes through a real edge,
a real sydney-worker and a real image-worker on its Bing backend, against the sandbox's fake of Bing
(services/sandbox/bing/, written from the fact sheet). What the fake saw (`/_sandbox/bing/requests`)
says which account or whose cookies ran each call; the services' logs are searched for the caller's
cookie values, which must never appear there.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import nats
import openai
import orjson
import pytest
import pytest_asyncio
from nats.js.errors import BucketNotFoundError, NoKeysError

from libs.account_pool.buckets import ACCOUNTS_BUCKET, CONVERSATIONS_BUCKET
from libs.devproc import Proc, free_port, spawn_python_service
from services.sandbox.bing.answer import answer_words
from services.sandbox.png import tiles
from tests.conftest import AUTH_KEY, service_env, start_edge

USERS = ("gina", "hank")
CALLER_U = "sandbox-u-ivan"  # the caller's own Bing account: never one of the pool's
CALLER_SECRET = "ivans-own-kiev-secret-7c1d9e"  # a cookie beside _U that must never reach a log or the KV
CALLER_COOKIES = f"_U={CALLER_U}; KievRPSSecAuth={CALLER_SECRET}"
CREATE = "/edgesvc/turing/conversation/create"
PNG = tiles(8, 8, 1)
HEADERS = {"authorization": f"Bearer {AUTH_KEY}"}


@dataclass
class Seed:
    edge: Proc
    fake: str
    workers: list[Proc]
    nats_url: str

    def logs(self) -> str:
        return "".join(proc.log() for proc in [self.edge, *self.workers])


@pytest.fixture(scope="module")
def seed(stack: Any, sandbox: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seed]:
    folder = tmp_path_factory.mktemp("seed000")
    accounts = folder / "accounts.toml"
    accounts.write_text("".join(f'[[accounts]]\nname = "{u}"\ncookies = "_U=sandbox-u-{u}"\n\n' for u in USERS))
    ws = sandbox.url.replace("http://", "ws://")
    bing = {"SYDNEY_CREATE_URL": sandbox.url + CREATE, "SYDNEY_CHATHUB_URL": ws + "/sydney/ChatHub",
            "BING_BASE_URL": sandbox.url, "SYDNEY_ACCOUNTS_FILE": str(accounts), "LOG_LEVEL": "DEBUG"}
    edge = start_edge(stack.nats_url, stack.log_dir, name="edge-seed000", LOG_LEVEL="DEBUG")
    workers = []
    for name, module, extra in (("sydney-seed000", "services.sydney_worker", {"WORKER_POOL": "sydney-seed"}),
                                ("bing-images-seed000", "services.image_worker",
                                 {"WORKER_POOL": "bing-images-seed", "IMAGES_BACKEND": "bing"})):
        port = free_port()
        env = service_env(stack.nats_url, PORT=str(port), WORKER_ID=name, **bing, **extra)
        workers.append(spawn_python_service(name, module, env=env, log_dir=stack.log_dir,
                                            health_url=f"http://127.0.0.1:{port}/readyz"))
    try:
        yield Seed(edge, sandbox.url, workers, stack.nats_url)
    finally:
        for proc in [edge, *workers]:
            proc.stop()


@pytest_asyncio.fixture
async def http(seed: Seed) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=seed.edge.url, headers=HEADERS, timeout=30) as client:
        deadline = time.monotonic() + 15
        while True:  # both workers announced
            listed = {m["id"] for m in (await client.get("/v1/models")).json()["data"]}
            if {"sydney-creative", "bing-image-creator"} <= listed:
                break
            assert time.monotonic() < deadline, listed
            await asyncio.sleep(0.05)
        yield client


async def fake_requests(seed: Seed, kind: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=seed.fake, timeout=10) as client:
        return [r for r in (await client.get("/_sandbox/bing/requests")).json()["requests"] if r["kind"] == kind]


def sse_events(raw: bytes) -> list[tuple[str, Any]]:
    """SydneyQt's SSE: `event: <type>` and `data: <a JSON string>` per event."""
    events = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        lines = dict(line.split(": ", 1) for line in block.split("\n") if not line.startswith(":"))
        events.append((lines["event"], orjson.loads(lines["data"])))
    return events


async def chat_stream(http: httpx.AsyncClient, body: dict[str, Any]) -> tuple[httpx.Response, list[tuple[str, Any]]]:
    response = await http.post("/chat/stream", json=body)
    return response, sse_events(response.content) if response.status_code == 200 else []


@pytest.mark.asyncio
async def test_chat_stream_speaks_sydneyqts_events_on_a_pool_account(http: httpx.AsyncClient, seed: Seed) -> None:
    prompt = "What is the weather? [sandbox search tokens=6]"
    response, events = await chat_stream(http, {"prompt": prompt, "context": "[system](#instructions)\nBe brief.",
                                                "conversationStyle": "precise"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/event-stream; charset=UTF-8"
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "search_query" and "search_result" in kinds and kinds[-1] == "suggested_responses", kinds
    assert all(isinstance(data, str) for _, data in events)  # every data line is a JSON string literal
    results = orjson.loads(next(data for kind, data in events if kind == "search_result"))
    assert results and {"index", "link", "title"} <= set(results[0])
    text = "".join(data for kind, data in events if kind == "message")
    context = "[system](#instructions)\nBe brief."
    assert text.split() == answer_words(prompt, context, None, 6)[-len(text.split()):]
    chat = (await fake_requests(seed, "chat"))[-1]
    assert chat["account"] in USERS and chat["tone"] == "Precise" and chat["context"] == context


@pytest.mark.asyncio
async def test_an_uploaded_image_is_seen_by_the_chat_that_attaches_it(http: httpx.AsyncClient, seed: Seed) -> None:
    upload = await http.post("/image/upload", files={"file": ("cat.png", PNG, "image/png")})
    assert upload.status_code == 200, upload.text
    assert upload.headers["content-type"] == "text/plain; charset=UTF-8"
    url = upload.text
    assert url.startswith(seed.fake + "/images/blob?bcid=")
    kblob = (await fake_requests(seed, "kblob"))[-1]
    assert kblob["cookies"] == []  # SydneyQt uploads with no cookies; so do we, for a pool request
    response, events = await chat_stream(http, {"prompt": "What is in it? [sandbox tokens=3]", "imageUrl": url})
    assert response.status_code == 200, response.text
    text = "".join(data for kind, data in events if kind == "message")
    assert text.startswith("I see your image."), text
    assert (await fake_requests(seed, "chat"))[-1]["imageUrl"] == url


@pytest.mark.asyncio
async def test_the_callers_own_cookies_run_the_turn_and_go_nowhere_else(http: httpx.AsyncClient, seed: Seed) -> None:
    response, events = await chat_stream(http, {"prompt": "Hello [sandbox tokens=4]", "cookies": CALLER_COOKIES})
    assert response.status_code == 200, response.text
    assert [kind for kind, _ in events].count("message") >= 1
    assert (await fake_requests(seed, "chat"))[-1]["account"] == "ivan"
    # the OpenAI route takes them from the Cookie header (seed 000), on a pool that announces `cookies`
    async with openai.AsyncOpenAI(base_url=seed.edge.url + "/v1", api_key=AUTH_KEY, max_retries=0) as sdk:
        answer = await sdk.chat.completions.create(
            model="sydney-balanced", messages=[{"role": "user", "content": "Hi [sandbox tokens=3]"}],
            extra_headers={"Cookie": CALLER_COOKIES})
    assert answer.choices[0].message.content
    chat = (await fake_requests(seed, "chat"))[-1]
    assert chat["account"] == "ivan" and chat["tone"] == "Balanced"
    # never logged, never stored: the services' logs (at DEBUG) and every key of the shared buckets
    await asyncio.sleep(0.2)  # the access lines of the requests above
    assert CALLER_SECRET not in seed.logs() and CALLER_U not in seed.logs()
    nc = await nats.connect(seed.nats_url)
    try:
        js = nc.jetstream()
        for bucket in (ACCOUNTS_BUCKET, CONVERSATIONS_BUCKET):
            try:
                kv = await js.key_value(bucket)
            except BucketNotFoundError:  # sydney-worker keeps no conversation map: none was made here
                continue
            try:
                keys = await kv.keys()
            except NoKeysError:  # an empty bucket
                continue
            for key in keys:
                value = (await kv.get(key)).value or b""
                assert CALLER_SECRET.encode() not in value and CALLER_U.encode() not in value, key
    finally:
        await nc.close()


@pytest.mark.asyncio
async def test_a_failure_after_the_first_event_is_the_last_event(http: httpx.AsyncClient) -> None:
    response, events = await chat_stream(http, {"prompt": "Go on [sandbox tokens=8 result=Throttled after=3]"})
    assert response.status_code == 200, response.text
    assert [kind for kind, _ in events].count("message") >= 1
    kind, text = events[-1]
    assert kind == "error" and "throttled" in text.lower(), events


@pytest.mark.asyncio
async def test_a_failure_before_the_first_event_is_an_http_error(http: httpx.AsyncClient) -> None:
    response = await http.post("/chat/stream", json={"prompt": "Rude [sandbox apology=0]"})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "content_policy_violation"


@pytest.mark.asyncio
async def test_image_create_polls_bing_for_the_images_of_a_chats_generative_image(http: httpx.AsyncClient) -> None:
    response, events = await chat_stream(http, {"prompt": "Draw a cat [sandbox image tokens=2]"})
    assert response.status_code == 200, response.text
    image = orjson.loads(next(data for kind, data in events if kind == "generative_image"))
    assert {"text", "url"} <= set(image)
    created = await http.post("/image/create", json={"image": image})
    assert created.status_code == 200, created.text
    assert created.headers["content-type"] == "application/json; charset=UTF-8"
    result = created.json()
    assert result["text"] == image["text"] and result["url"] == image["url"]
    assert len(result["image_urls"]) == 4 and type(result["duration"]) is int and result["duration"] > 0
    picture = await http.get(result["image_urls"][0])
    assert picture.status_code == 200 and picture.content.startswith(b"\x89PNG")


@pytest.mark.asyncio
async def test_image_create_that_never_finishes_times_out(http: httpx.AsyncClient) -> None:
    _, events = await chat_stream(http, {"prompt": "Draw [sandbox image tokens=1]"})
    image = orjson.loads(next(data for kind, data in events if kind == "generative_image"))
    image["url"] = image["url"].replace("&q=", "&q=never+%5Bsandbox+never%5D+", 1)
    image["text"] = "never [sandbox never] " + image["text"]
    started = time.monotonic()
    created = await http.post("/image/create", json={"image": image})
    assert created.status_code == 504, created.text
    assert "timeout" in created.json()["error"]["message"]
    assert time.monotonic() - started < 10


@pytest.mark.asyncio
async def test_image_create_refuses_a_url_that_is_not_bings_image_creator(http: httpx.AsyncClient,
                                                                           seed: Seed) -> None:
    before = len(await fake_requests(seed, "creator"))
    created = await http.post("/image/create", json={"image": {"text": "a cat", "url": "http://127.0.0.1:1/steal"}})
    assert created.status_code == 400, created.text
    assert created.json()["error"]["param"] == "image.url"
    assert len(await fake_requests(seed, "creator")) == before  # the cookies went nowhere


@pytest.mark.asyncio
async def test_openai_images_through_bing_on_the_callers_cookies(http: httpx.AsyncClient, seed: Seed) -> None:
    async with openai.AsyncOpenAI(base_url=seed.edge.url + "/v1", api_key=AUTH_KEY, max_retries=0) as sdk:
        images = await sdk.images.generate(model="bing-image-creator", prompt="a lighthouse [sandbox image]", n=2,
                                           extra_headers={"Cookie": CALLER_COOKIES})
    data = images.data or []
    assert len(data) == 2 and all(d.url and "?" not in d.url for d in data)
    assert data[0].revised_prompt
    creators = await fake_requests(seed, "creator")
    assert creators[-1]["account"] == "ivan"
    assert CALLER_SECRET not in seed.logs()


def test_the_seed_routes_are_in_the_openapi_document(seed: Seed) -> None:
    document = httpx.get(seed.edge.url + "/openapi.json", timeout=10).json()
    assert {"/chat/stream", "/image/upload", "/image/create"} <= set(document["paths"])


@pytest.mark.asyncio
async def test_a_whole_answer_carries_bings_extras_and_the_conversation_continues(seed: Seed,
                                                                                http: httpx.AsyncClient) -> None:
    async with openai.AsyncOpenAI(base_url=seed.edge.url + "/v1", api_key=AUTH_KEY, max_retries=0) as sdk:
        first = await sdk.chat.completions.create(
            model="sydney-creative", messages=[{"role": "user", "content": "Weather? [sandbox search tokens=4]"}])
        extras = first.choices[0].message.model_extra or {}
        assert extras["search_results"] and {"index", "link", "title"} <= set(extras["search_results"][0])
        assert extras["suggested_responses"] and all(isinstance(s, str) for s in extras["suggested_responses"])
        conversation = extras["conversation"]
        assert conversation["secAccessToken"].startswith("sy1.") and conversation["bearerToken"] == ""
        first_chat = (await fake_requests(seed, "chat"))[-1]
        again = await sdk.chat.completions.create(
            model="sydney-creative", messages=[{"role": "user", "content": "And tomorrow? [sandbox tokens=3]"}],
            extra_body={"conversation": conversation})
    assert again.choices[0].message.content
    chat = (await fake_requests(seed, "chat"))[-1]
    assert chat["conversationId"] == first_chat["conversationId"] == conversation["conversationId"]
    assert chat["isStartOfSession"] is False and chat["account"] == first_chat["account"]
