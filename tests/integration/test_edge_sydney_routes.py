"""SydneyQt's web API (seed 000) on the edge, relayed as `sydney` and `bing_image` jobs, and the
caller's Cookie header on the OpenAI routes for pools that use it.

A real edge and real worker processes (tests/contract/fake_worker.py, FAKE_KIND=sydney and
FAKE_KIND=bing_image) on the session's NATS, so the session wiretap checks every job and reply
against proto/. The fake sydney-worker answers a turn with SydneyQt-shaped events, the last one
(`fake_echo`) echoing the job body and whether the job carried cookies; its directives are written
in the prompt (`[fake fail=... fail_after=...]`); tests/contract/fake_backend.py says how.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from openai import AsyncOpenAI

from libs.devproc import Proc, free_port, spawn_python_service
from tests.conftest import AUTH_KEY, Stack, service_env, start_edge
from tests.contract.fake_backend import BLOB_URL, TINY_PNG, bing_image_result, sydney_events
from tests.schema_strategies import broken_bodies, valid_bodies
from tests.wiretap import Wiretap

KEY = {"authorization": f"Bearer {AUTH_KEY}"}
# a Bing cookie string, unique to this run so the edge's log can be searched for it
COOKIE_VALUE = "sydney-secret-" + uuid.uuid4().hex
COOKIES = f"_U={COOKIE_VALUE}; KievRPSSecAuth=kv-{uuid.uuid4().hex}"
UPLOAD_LIMIT = 64 * 1024  # this module's edge's SYDNEY_UPLOAD_MAX_BYTES
PNG = base64.b64decode(TINY_PNG)
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 32
GIF = b"GIF89a\x01\x00\x01\x00" + b"\x00" * 32
WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 " + b"\x00" * 32
CREATOR_URL = "https://www.bing.com/images/create?partner=sydney&re=1&q=a+cute+pigeon&iframeid=m-1"
EXPECTED_MESSAGE = "the fake upstream failed as told"  # what the fake's failures say


def worker(stack: Stack, kind: str, pool: str, events: Path) -> Proc:
    port = free_port()
    # the events file also numbers a job's tries (a directive may fail the first try only)
    env = service_env(stack.nats_url, PORT=str(port), WORKER_POOL=pool, WORKER_CAPACITY="8",
                      WORKER_ID=f"{pool}-1", FAKE_KIND=kind, FAKE_EVENTS_FILE=str(events))
    return spawn_python_service(f"{pool}-worker", "tests.contract.fake_worker", env=env, log_dir=stack.log_dir,
                                health_url=f"http://127.0.0.1:{port}/readyz")


@pytest.fixture(scope="module")
def workers(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    events = tmp_path_factory.mktemp("sydney")
    procs = [worker(stack, "sydney", "sydney", events / "sydney.jsonl"),
             worker(stack, "bing_image", "bing-image", events / "bing.jsonl")]
    yield
    for proc in procs:
        proc.stop()


@pytest.fixture(scope="module")
def edge(stack: Stack, workers: None) -> Iterator[Proc]:
    # at DEBUG, so that every line the edge may write is there to search for the cookies
    proc = start_edge(stack.nats_url, stack.log_dir, name="edge-sydney", LOG_LEVEL="DEBUG",
                      SYDNEY_UPLOAD_MAX_BYTES=str(UPLOAD_LIMIT))
    yield proc
    proc.stop()


@pytest.fixture
async def client(edge: Proc) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=edge.url, headers=KEY, timeout=20) as http:
        deadline = time.monotonic() + 15
        wanted = {"sydney-creative", "sydney-balanced", "sydney-precise", "bing-image-creator"}
        while not wanted <= {m["id"] for m in (await http.get("/v1/models")).json()["data"]}:
            assert time.monotonic() < deadline, "the fake sydney and bing workers never became live"
            await asyncio.sleep(0.05)
        yield http


async def jobs_since(wiretap: Wiretap, seen: int, *kinds: str, count: int = 1) -> list[dict[str, Any]]:
    """The `count` jobs of `kinds` published since `seen` messages, once each (a blind job is
    published again), waiting (bounded) for the tap: it reads the bus on a connection of its own."""
    deadline = time.monotonic() + 5
    while True:
        jobs = {m["job_id"]: m for schema, m in wiretap.messages[seen:] if schema == "switchyard.v1.job"
                and m["kind"] in kinds}
        if len(jobs) >= count or time.monotonic() > deadline:
            assert len(jobs) == count, [(j["kind"], j["model"]) for j in jobs.values()]
            return list(jobs.values())
        await asyncio.sleep(0.02)


def chat_job(prompt: str, **fields: Any) -> dict[str, Any]:
    """The job body the edge publishes for a turn with these (canonical) fields."""
    return {"op": "chat", "prompt": prompt, "context": fields.pop("context", ""), **fields.pop("image", {}),
            "noSearch": False, "conversationStyle": "Creative", "gpt4turbo": False, "classic": False,
            "plugins": [], **fields}


def sse_bytes(events: list[dict[str, Any]]) -> bytes:
    return b"".join(b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e["text"]) + b"\n\n"
                    for e in events)


def parse_sse(raw: bytes) -> list[tuple[str, Any]]:
    """(event, decoded data) of each event, checking SydneyQt's framing (comments skipped)."""
    assert raw.endswith(b"\n\n"), raw[-200:]
    events = []
    for block in raw.decode().split("\n\n")[:-1]:
        lines = [line for line in block.split("\n") if not line.startswith(":")]
        if not lines:
            continue
        assert len(lines) == 2 and lines[0].startswith("event: ") and lines[1].startswith("data: "), block
        events.append((lines[0][7:], orjson.loads(lines[1][6:])))
    return events


# ---- /chat/stream ---------------------------------------------------------------------------------


async def test_a_turn_streams_sydneyqt_events_exactly(client: httpx.AsyncClient, wiretap: Wiretap) -> None:
    seen = len(wiretap.messages)
    body = {"prompt": "Weather in Paris?", "context": "[system](#instructions)\nBe brief.", "cookies": COOKIES}
    reply = await client.post("/chat/stream", json=body)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "text/event-stream; charset=UTF-8"
    assert reply.headers["cache-control"] == "no-cache"
    job_body = chat_job(body["prompt"], context=body["context"])
    # data is always a JSON string literal: suggested_responses and the echo are JSON inside it
    assert reply.content == sse_bytes(sydney_events(body["prompt"], 3, {"cookies": True, "body": job_body}))
    assert reply.content.startswith(b'event: search_query\ndata: "Searching the web for: `Weather in Paris?`"\n\n'
                                    b'event: message\ndata: "w0 "\n\n')
    (job,) = await jobs_since(wiretap, seen, "sydney")
    assert (job["model"], job["pool"], job["cookies"]) == ("sydney-creative", "sydney", COOKIES)
    assert job["body"] == job_body  # the cookies in the job's own field, never in its body
    assert COOKIE_VALUE not in orjson.dumps(job["body"]).decode()


async def test_keys_match_whatever_their_case_and_unknown_ones_are_dropped(
    client: httpx.AsyncClient, wiretap: Wiretap,
) -> None:
    seen = len(wiretap.messages)
    body = {"PROMPT": "Hi", "Context": "c", "ConversationStyle": "precise", "NOSEARCH": True,
            "imageurl": "https://www.bing.com/images/blob?bcid=abc", "GPT4Turbo": True, "Classic": True,
            "Plugins": ["Suno"], "Conversation": {"id": "c-1"}, "unknownField": 1, "locale": "en-US"}
    reply = await client.post("/chat/stream", json=body)
    assert reply.status_code == 200, reply.text
    echo = orjson.loads(parse_sse(reply.content)[-1][1])
    expected = chat_job("Hi", context="c", image={"imageUrl": "https://www.bing.com/images/blob?bcid=abc"},
                        noSearch=True, conversationStyle="Precise", gpt4turbo=True, classic=True,
                        plugins=["Suno"], conversation={"id": "c-1"})
    assert echo == {"cookies": False, "body": expected}
    (job,) = await jobs_since(wiretap, seen, "sydney")
    assert job["model"] == "sydney-precise" and "cookies" not in job


@pytest.mark.parametrize(("style", "model", "canonical"), [
    ("Balanced", "sydney-balanced", "Balanced"), ("BALANCED", "sydney-balanced", "Balanced"),
    ("", "sydney-creative", "Creative"), (None, "sydney-creative", "Creative"),
])
async def test_the_style_picks_the_model(
    client: httpx.AsyncClient, wiretap: Wiretap, style: str | None, model: str, canonical: str,
) -> None:
    seen = len(wiretap.messages)
    reply = await client.post("/chat/stream", json={"prompt": "Hi", "conversationStyle": style})
    assert reply.status_code == 200, reply.text
    (job,) = await jobs_since(wiretap, seen, "sydney")
    assert (job["model"], job["body"]["conversationStyle"]) == (model, canonical)


INVALID_TURNS = [
    ({}, "prompt", "missing_required_parameter"),
    ({"prompt": ""}, "prompt", "invalid_value"),
    ({"prompt": 5}, "prompt", "invalid_type"),
    ({"prompt": "Hi", "context": ["x"]}, "context", "invalid_type"),
    ({"prompt": "Hi", "cookies": 5}, "cookies", "invalid_type"),
    ({"prompt": "Hi", "cookies": "x" * 32769}, "cookies", "invalid_value"),
    ({"prompt": "Hi", "imageUrl": "ftp://example.com/a.png"}, "imageUrl", "invalid_value"),
    ({"prompt": "Hi", "imageUrl": "not a url"}, "imageUrl", "invalid_value"),
    ({"prompt": "Hi", "noSearch": "yes"}, "noSearch", "invalid_type"),
    ({"prompt": "Hi", "gpt4turbo": 1}, "gpt4turbo", "invalid_type"),
    ({"prompt": "Hi", "classic": "false"}, "classic", "invalid_type"),
    ({"prompt": "Hi", "conversationStyle": "Designer"}, "conversationStyle", "invalid_value"),
    ({"prompt": "Hi", "conversationStyle": 1}, "conversationStyle", "invalid_type"),
    ({"prompt": "Hi", "plugins": "Suno"}, "plugins", "invalid_type"),
    ({"prompt": "Hi", "plugins": ["Suno", "Instacart"]}, "plugins[1]", "invalid_value"),
    ({"prompt": "Hi", "conversation": "c-1"}, "conversation", "invalid_type"),
    ({"Prompt": ""}, "prompt", "invalid_value"),  # the canonical name, whatever the key's case
]


@pytest.mark.parametrize(("body", "param", "code"), INVALID_TURNS, ids=[f"{p} {c}" for _, p, c in INVALID_TURNS])
async def test_invalid_turns_are_400s_naming_the_field(
    client: httpx.AsyncClient, body: dict[str, Any], param: str, code: str,
) -> None:
    reply = await client.post("/chat/stream", json=body)
    assert reply.status_code == 400, reply.text
    assert reply.headers["content-type"] == "application/json"
    error = reply.json()["error"]
    assert (error["param"], error["code"], error["type"]) == (param, code, "invalid_request_error")
    if param == "conversationStyle" and code == "invalid_value":
        assert "Creative, Balanced, Precise" in error["message"]


async def test_a_body_that_is_not_a_json_object_is_a_400(client: httpx.AsyncClient) -> None:
    for content in (b"[1]", b"{", b""):
        reply = await client.post("/chat/stream", content=content, headers={"content-type": "application/json"})
        assert reply.status_code == 400 and reply.json()["error"]["code"] in ("invalid_type", "invalid_json")


@pytest.mark.parametrize(("directive", "status", "code"), [
    ("fail=upstream_error retryable=false", 502, "upstream_error"),
    ("fail=accounts_busy retryable=false", 429, "accounts_busy"),
    ("fail=upstream_auth_error retryable=false", 502, "upstream_auth_error"),
])
async def test_a_failure_before_the_first_event_is_an_http_error(
    client: httpx.AsyncClient, directive: str, status: int, code: str,
) -> None:
    reply = await client.post("/chat/stream", json={"prompt": f"Hi [fake {directive}]"})
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"] == "application/json"
    assert reply.json()["error"]["code"] == code


async def test_a_retryable_failure_before_the_first_event_is_retried(client: httpx.AsyncClient) -> None:
    reply = await client.post("/chat/stream", json={"prompt": "Hi [fake fail=upstream_error retryable=true "
                                                               "fail_tries=1]"})
    assert reply.status_code == 200, reply.text
    assert [kind for kind, _ in parse_sse(reply.content)][-1] == "fake_echo"


async def test_a_failure_after_the_first_event_is_the_last_event_error(client: httpx.AsyncClient) -> None:
    reply = await client.post("/chat/stream", json={"prompt": "Hi [fake fail=upstream_error retryable=false "
                                                               "fail_after=2 gap=0.01]"})
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "text/event-stream; charset=UTF-8"
    events = parse_sse(reply.content)
    assert [kind for kind, _ in events] == ["search_query", "message", "error"]
    assert events[-1][1] == EXPECTED_MESSAGE
    assert reply.content.endswith(b'event: error\ndata: "' + EXPECTED_MESSAGE.encode() + b'"\n\n')


# ---- /image/upload ----------------------------------------------------------------------------------


def form(parts: list[tuple[str, str | None, bytes]], boundary: str = "sydneyBoundary7MA4YWxk") -> tuple[bytes, str]:
    """A multipart/form-data body of (name, filename, data) parts, and its content type."""
    body = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n".encode()
        if filename:
            body += b"Content-Type: application/octet-stream\r\n"
        body += b"\r\n" + data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


async def upload(client: httpx.AsyncClient, body: bytes | AsyncIterator[bytes], content_type: str) -> httpx.Response:
    return await client.post("/image/upload", content=body, headers={"content-type": content_type})


@pytest.mark.parametrize(("image", "content_type"), [(PNG, "image/png"), (JPEG, "image/jpeg"), (GIF, "image/gif"),
                                                     (WEBP, "image/webp")], ids=["png", "jpeg", "gif", "webp"])
async def test_an_upload_answers_the_image_url_as_text(
    client: httpx.AsyncClient, wiretap: Wiretap, image: bytes, content_type: str,
) -> None:
    seen = len(wiretap.messages)
    body, form_type = form([("file", "image.bin", image), ("cookies", None, COOKIES.encode())])
    reply = await upload(client, body, form_type)
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "text/plain; charset=UTF-8"
    assert reply.text == BLOB_URL + hashlib.sha256(image).hexdigest()
    (job,) = await jobs_since(wiretap, seen, "sydney")
    assert job["pool"] == "sydney" and job["cookies"] == COOKIES
    assert job["body"] == {"op": "upload", "image": base64.b64encode(image).decode(), "content_type": content_type}


async def test_an_upload_without_cookies_sends_none(client: httpx.AsyncClient, wiretap: Wiretap) -> None:
    seen = len(wiretap.messages)
    reply = await upload(client, *form([("other", None, b"x"), ("file", "a.png", PNG), ("file", "b.gif", GIF)]))
    assert reply.text == BLOB_URL + hashlib.sha256(PNG).hexdigest()  # the first file part
    (job,) = await jobs_since(wiretap, seen, "sydney")
    assert "cookies" not in job


async def test_an_upload_sent_slowly_in_odd_pieces_is_whole(client: httpx.AsyncClient) -> None:
    image = PNG + bytes(range(256)) * 8
    body, form_type = form([("cookies", None, COOKIES.encode()), ("file", "slow.png", image)])
    cuts = [0, 1, 7, 30, 31, 90, 200, len(body) - 5, len(body)]  # inside the boundary, the headers, the data

    async def slowly() -> AsyncIterator[bytes]:
        for start, end in itertools.pairwise(cuts):
            yield body[start:end]
            await asyncio.sleep(0.05)

    reply = await upload(client, slowly(), form_type)  # chunked: no Content-Length
    assert reply.status_code == 200, reply.text
    assert reply.text == BLOB_URL + hashlib.sha256(image).hexdigest()


def sized_form(total: int) -> tuple[bytes, str]:
    """A valid upload form of exactly `total` bytes (a PNG padded at its end)."""
    empty, form_type = form([("file", "big.png", PNG)])
    body, _ = form([("file", "big.png", PNG + b"\x00" * (total - len(empty)))])
    assert len(body) == total
    return body, form_type


async def test_an_upload_at_the_limit_passes_and_one_byte_over_is_a_413(client: httpx.AsyncClient) -> None:
    body, form_type = sized_form(UPLOAD_LIMIT)
    assert (await upload(client, body, form_type)).status_code == 200
    body, form_type = sized_form(UPLOAD_LIMIT + 1)
    reply = await upload(client, body, form_type)  # Content-Length says it: refused before the body is read
    assert reply.status_code == 413
    assert reply.json()["error"]["code"] == "request_too_large"

    async def chunked() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 8192):
            yield body[start:start + 8192]

    reply = await upload(client, chunked(), form_type)  # no Content-Length: refused as it grows past the limit
    assert reply.status_code == 413
    assert reply.json()["error"]["code"] == "request_too_large"


async def test_a_content_length_over_the_limit_is_refused_before_the_body(edge: Proc) -> None:
    """The 413 comes while the client still holds its body back: nothing of it is read first."""
    body, form_type = sized_form(UPLOAD_LIMIT + 1)
    host, port = edge.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(f"POST /image/upload HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {AUTH_KEY}\r\n"
                     f"Content-Type: {form_type}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body[:100])
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    finally:
        writer.close()
    assert head.startswith(b"HTTP/1.1 413 "), head


INVALID_UPLOADS = [
    ("not an image", *form([("file", "notes.txt", b"just some text, not an image")]), "invalid_image_format"),
    ("no file part", *form([("cookies", None, COOKIES.encode())]), "missing_required_parameter"),
    ("empty file", *form([("file", "empty.png", b"")]), "invalid_value"),
    ("not multipart", b'{"file": "x"}', "application/json", "invalid_value"),
    ("no boundary", b"--x\r\n", "multipart/form-data", "invalid_value"),
    ("cut short", form([("file", "a.png", PNG)])[0][:-30], form([])[1], "invalid_value"),
    ("malformed", b"garbage without any boundary at all\r\n", form([])[1], "invalid_value"),
]


@pytest.mark.parametrize(("body", "content_type", "code"), [case[1:] for case in INVALID_UPLOADS],
                         ids=[case[0] for case in INVALID_UPLOADS])
async def test_invalid_uploads_are_400s_naming_file(
    client: httpx.AsyncClient, body: bytes, content_type: str, code: str,
) -> None:
    reply = await upload(client, body, content_type)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert (error["param"], error["code"]) == ("file", code)


# ---- /image/create ----------------------------------------------------------------------------------


async def test_image_create_answers_the_generate_image_result(client: httpx.AsyncClient, wiretap: Wiretap) -> None:
    seen = len(wiretap.messages)
    image = {"text": "a cute pigeon, digital art", "url": CREATOR_URL}
    reply = await client.post("/image/create", json={"Image": {"TEXT": image["text"], "Url": CREATOR_URL,
                                                               "extra": 1}, "COOKIES": COOKIES})
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"] == "application/json; charset=UTF-8"
    assert reply.json() == bing_image_result(image)
    (job,) = await jobs_since(wiretap, seen, "bing_image")
    assert (job["model"], job["pool"], job["cookies"]) == ("bing-image-creator", "bing-image", COOKIES)
    assert job["body"] == {"image": image}


INVALID_CREATES = [
    ({}, "image", "missing_required_parameter"),
    ({"image": "a pigeon"}, "image", "invalid_type"),
    ({"image": {"url": CREATOR_URL}}, "image.text", "missing_required_parameter"),
    ({"image": {"text": "", "url": CREATOR_URL}}, "image.text", "invalid_value"),
    ({"image": {"text": "x"}}, "image.url", "missing_required_parameter"),
    ({"image": {"text": "x", "url": "javascript:alert(1)"}}, "image.url", "invalid_value"),
    ({"image": {"text": "x", "url": CREATOR_URL}, "cookies": ["a"]}, "cookies", "invalid_type"),
]


@pytest.mark.parametrize(("body", "param", "code"), INVALID_CREATES, ids=[f"{p} {c}" for _, p, c in INVALID_CREATES])
async def test_invalid_image_creates_are_400s(client: httpx.AsyncClient, body: Any, param: str, code: str) -> None:
    reply = await client.post("/image/create", json=body)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert (error["param"], error["code"]) == (param, code)


async def test_an_image_creation_failure_is_an_http_error(client: httpx.AsyncClient) -> None:
    reply = await client.post("/image/create", json={"image": {"text": "x [fake fail=upstream_bad_request "
                                                                       "retryable=false]", "url": CREATOR_URL}})
    assert reply.status_code == 400
    assert reply.json()["error"]["code"] == "upstream_bad_request"


# ---- the Cookie header on the OpenAI routes ---------------------------------------------------------


async def test_the_cookie_header_reaches_only_pools_with_the_cookies_feature(
    client: httpx.AsyncClient, edge: Proc, wiretap: Wiretap,
) -> None:
    """With the openai SDK: chat (streamed or not), completions and images on pools that announce
    `cookies` get the caller's Cookie header as the job's cookies; the openai pool never does."""
    async with AsyncOpenAI(base_url=edge.url + "/v1", api_key=AUTH_KEY, max_retries=0) as openai:
        await cookies_reach_only_their_pools(openai, wiretap)


async def cookies_reach_only_their_pools(openai: AsyncOpenAI, wiretap: Wiretap) -> None:
    cookie = {"Cookie": COOKIES}
    messages: Any = [{"role": "user", "content": "Hello"}]
    seen = len(wiretap.messages)
    answer = await openai.chat.completions.create(model="sydney-balanced", messages=messages, extra_headers=cookie)
    assert (answer.choices[0].message.content or "").startswith("cookies=yes ")
    stream = await openai.chat.completions.create(model="sydney-balanced", messages=messages, stream=True,
                                                  extra_headers=cookie)
    streamed = "".join([chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices])
    assert streamed.startswith("cookies=yes ")
    completion = await openai.completions.create(model="sydney-precise", prompt="Hello", extra_headers=cookie)
    assert completion.choices[0].text.startswith("cookies=yes ")
    images = await openai.images.generate(model="bing-image-creator", prompt="a pigeon", extra_headers=cookie)
    assert images.data is not None and images.data[0].revised_prompt == "cookies=yes"
    jobs = await jobs_since(wiretap, seen, "chat", "image", count=4)
    assert all(job["cookies"] == COOKIES for job in jobs)

    # without the header, no cookies; on a pool without the feature, never
    seen = len(wiretap.messages)
    answer = await openai.chat.completions.create(model="sydney-balanced", messages=messages)
    assert (answer.choices[0].message.content or "").startswith("cookies=no ")
    await openai.chat.completions.create(model="sandbox-chat", messages=messages, extra_headers=cookie)
    stream = await openai.chat.completions.create(model="sandbox-chat", messages=messages, stream=True,
                                                  extra_headers=cookie)
    async for _ in stream:
        pass
    jobs = await jobs_since(wiretap, seen, "chat", count=3)
    assert sorted(job["pool"] for job in jobs) == ["openai", "openai", "sydney"]
    assert all("cookies" not in job for job in jobs)


# ---- secrets, and no worker -------------------------------------------------------------------------


async def test_the_edge_never_logs_the_cookies(client: httpx.AsyncClient, edge: Proc) -> None:
    await client.post("/chat/stream", json={"prompt": "Hi", "cookies": COOKIES})
    await client.post("/chat/stream", json={"prompt": "Hi", "cookies": COOKIES, "noSearch": "no"})  # a 400
    await client.post("/chat/stream", json={"prompt": "Hi [fake fail=upstream_error retryable=false fail_after=1]",
                                            "cookies": COOKIES})
    await upload(client, *form([("file", "a.png", PNG), ("cookies", None, COOKIES.encode())]))
    await upload(client, *form([("file", "a.txt", b"text"), ("cookies", None, COOKIES.encode())]))  # a 400
    await client.post("/image/create", json={"image": {"text": "x", "url": CREATOR_URL}, "cookies": COOKIES})
    await client.post("/v1/chat/completions", headers={"cookie": COOKIES},
                      json={"model": "sydney-creative", "messages": [{"role": "user", "content": "Hi"}]})
    log = edge.log()
    assert "POST /chat/stream 200" in log and "POST /image/upload 400" in log  # the access log is there
    assert COOKIE_VALUE not in log


@pytest.fixture(scope="module")
def workerless_edge(private_nats: Proc, log_dir: Path) -> Iterator[Proc]:
    """An edge on a NATS no worker is connected to."""
    edge = start_edge(private_nats.url, log_dir, name="edge-sydney-no-worker")
    yield edge
    edge.stop()


async def test_no_worker_is_a_503_naming_the_worker_needed(workerless_edge: Proc) -> None:
    async with httpx.AsyncClient(base_url=workerless_edge.url, headers=KEY, timeout=20) as http:
        replies = {
            "sydney-worker": [await http.post("/chat/stream", json={"prompt": "Hi"}),
                              await upload(http, *form([("file", "a.png", PNG)]))],
            "image-worker": [await http.post("/image/create", json={"image": {"text": "x", "url": CREATOR_URL}})],
        }
    for needed, answers in replies.items():
        for reply in answers:
            assert reply.status_code == 503, reply.text
            error = reply.json()["error"]
            assert error["code"] == "no_worker" and needed in error["message"]


# ---- bodies drawn from the OpenAPI document: what it allows reaches the worker --------------------------

FUZZ = settings(max_examples=15, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def fuzz_sydney_route(base_url: str, path: str, schema: dict[str, Any], document: dict[str, Any]) -> dict[int, int]:
    statuses: dict[int, int] = {}
    with httpx.Client(base_url=base_url, headers=KEY, timeout=30) as http:

        def post(body: Any) -> httpx.Response:
            content = json.dumps(body, ensure_ascii=False).encode()  # nests deeper than orjson writes
            response = http.post(path, content=content, headers={"content-type": "application/json"})
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            assert response.status_code < 500, (body, response.text[:500])
            if response.status_code >= 400:
                error = response.json()["error"]
                assert error["message"] and error["type"] and "param" in error and "code" in error, error
            return response

        @FUZZ
        @given(valid_bodies(schema, document))
        def valid(body: dict[str, Any]) -> None:
            assert post(body).status_code == 200, body

        @FUZZ
        @given(broken_bodies(schema, document))
        def broken(body: Any) -> None:
            post(body)

        valid()
        broken()
    return statuses


@pytest.mark.parametrize("path", ["/chat/stream", "/image/create"])
async def test_bodies_the_document_allows_reach_the_worker_and_broken_ones_are_4xx(
    client: httpx.AsyncClient, path: str,
) -> None:
    document = (await client.get("/openapi.json")).json()
    schema = document["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
    # a thread for the blocking client, so the session's loop (the bus wiretap) keeps running
    statuses = await asyncio.to_thread(fuzz_sydney_route, str(client.base_url), path, schema, document)
    assert statuses.get(200, 0) >= 2 and statuses.get(400, 0) >= 2, statuses
