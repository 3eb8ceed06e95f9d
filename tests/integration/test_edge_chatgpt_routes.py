"""go-chatgpt-api's routes (seed 003) on the edge, relayed as `chatgpt_web` jobs.

Real edges and a real worker process (tests/contract/fake_worker.py, FAKE_KIND=chatgpt_web) on the
session's NATS, so the session wiretap checks every job and reply against proto/. The fake answers
each backend-api call with an echo of the job body (and whether it carried an access token), a
turn with ChatGPT-shaped events; tests/contract/fake_backend.py says how.

Two edges of this module's own: one keyed (AUTH_TOKEN) logging at DEBUG, so its log can be
searched for secrets, and one open (no AUTH_TOKEN); a third on a private NATS has no worker at all.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings

from libs.devproc import Proc, free_port, spawn_python_service
from tests.conftest import AUTH_KEY, Stack, metric, service_env, start_edge
from tests.contract.fake_backend import web_event
from tests.schema_strategies import broken_bodies, valid_bodies
from tests.wiretap import Wiretap

MODEL = "fake-chatgpt-web"
# a ChatGPT access token's shape (a JWT), unique to this run so the logs can be searched for it
ACCESS_TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ" + uuid.uuid4().hex + "In0.c2lnbmF0dXJlLXRlc3Q"
PASSWORD = "pw-" + uuid.uuid4().hex
KEY = {"authorization": f"Bearer {AUTH_KEY}"}
MESSAGE = {"id": "m-1", "author": {"role": "user"}, "content": {"content_type": "text", "parts": ["Hello"]}}


def turn(**extra: Any) -> dict[str, Any]:
    return {"action": "next", "messages": [MESSAGE], "parent_message_id": "p-1", "model": MODEL, **extra}


@pytest.fixture(scope="module")
def events_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("chatgpt-web") / "events.jsonl"


@pytest.fixture(scope="module")
def web_worker(stack: Stack, events_file: Path) -> Iterator[Proc]:
    port = free_port()
    env = service_env(stack.nats_url, PORT=str(port), WORKER_POOL="chatgpt-web", WORKER_CAPACITY="4",
                      WORKER_ID="chatgpt-web-1", FAKE_KIND="chatgpt_web", FAKE_MODEL=MODEL,
                      FAKE_EVENTS_FILE=str(events_file))
    proc = spawn_python_service("chatgpt-web-worker", "tests.contract.fake_worker", env=env, log_dir=stack.log_dir,
                                health_url=f"http://127.0.0.1:{port}/readyz")
    yield proc
    proc.stop()


async def until_served(url: str, headers: dict[str, str]) -> None:
    """Until the edge at `url` has heard the worker announce its model (bounded)."""
    async with httpx.AsyncClient(base_url=url, headers=headers) as client:
        deadline = time.monotonic() + 15
        while MODEL not in {m["id"] for m in (await client.get("/v1/models")).json()["data"]}:
            assert time.monotonic() < deadline, "the chatgpt-web worker never became live"
            await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
def keyed_edge(stack: Stack, web_worker: Proc) -> Iterator[Proc]:
    edge = start_edge(stack.nats_url, stack.log_dir, name="edge-chatgpt", LOG_LEVEL="DEBUG")
    yield edge
    edge.stop()


@pytest.fixture(scope="module")
def open_edge(stack: Stack, web_worker: Proc) -> Iterator[Proc]:
    edge = start_edge(stack.nats_url, stack.log_dir, name="edge-chatgpt-open", AUTH_TOKEN="", LOG_LEVEL="DEBUG")
    yield edge
    edge.stop()


@pytest.fixture
async def keyed(keyed_edge: Proc) -> Any:
    await until_served(keyed_edge.url, KEY)
    async with httpx.AsyncClient(base_url=keyed_edge.url, timeout=20) as client:
        yield client


@pytest.fixture
async def open_client(open_edge: Proc) -> Any:
    await until_served(open_edge.url, {})
    async with httpx.AsyncClient(base_url=open_edge.url, timeout=20) as client:
        yield client


def echoed(reply: httpx.Response) -> dict[str, Any]:
    assert reply.status_code == 200, reply.text
    echo: dict[str, Any] = reply.json()["echo"]
    return echo


# ---- every route: its call arrives at the worker as the job body ---------------------------------

FEEDBACK = {"conversation_id": "c-1", "message_id": "a-1", "rating": "thumbsUp", "text": "good", "tags": ["x"]}
LOGIN = {"username": "someone@example.com", "password": PASSWORD}
RELAYS = [
    ("GET", "/conversations", None, {"method": "GET", "path": "/conversations",
                                     "query": {"offset": "0", "limit": "20"}}),
    ("GET", "/conversations?offset=40&limit=100&order=updated", None,
     {"method": "GET", "path": "/conversations", "query": {"offset": "40", "limit": "100", "order": "updated"}}),
    ("GET", "/conversation/3f1c2b7a-0d4e-4c1a-9a2b-1c2d3e4f5a6b", None,
     {"method": "GET", "path": "/conversation/3f1c2b7a-0d4e-4c1a-9a2b-1c2d3e4f5a6b"}),
    ("POST", "/conversation/gen_title/c-1", {"message_id": "a-1"},
     {"method": "POST", "path": "/conversation/gen_title/c-1", "json": {"message_id": "a-1"}}),
    ("PATCH", "/conversation/c-1", {"title": "New title"},
     {"method": "PATCH", "path": "/conversation/c-1", "json": {"title": "New title"}}),
    ("POST", "/conversation/c-1", {"is_visible": False, "extra": 1},  # POST for clients that cannot PATCH
     {"method": "PATCH", "path": "/conversation/c-1", "json": {"is_visible": False, "extra": 1}}),
    ("PATCH", "/conversation/c-1", {"is_archived": True},
     {"method": "PATCH", "path": "/conversation/c-1", "json": {"is_archived": True}}),
    ("PATCH", "/conversations", {"is_visible": False},
     {"method": "PATCH", "path": "/conversations", "json": {"is_visible": False}}),
    ("POST", "/conversations", {"is_visible": False},
     {"method": "PATCH", "path": "/conversations", "json": {"is_visible": False}}),
    ("POST", "/conversation/message_feedback", FEEDBACK,
     {"method": "POST", "path": "/conversation/message_feedback", "json": FEEDBACK}),
    ("POST", "/auth/login", LOGIN, {"method": "POST", "path": "/auth/login", "json": LOGIN}),
]


@pytest.mark.parametrize(("method", "url", "body", "job"), RELAYS, ids=[f"{m} {u}" for m, u, _, _ in RELAYS])
async def test_each_route_relays_its_call_as_the_job_body(
    keyed: httpx.AsyncClient, method: str, url: str, body: Any, job: dict[str, Any],
) -> None:
    reply = await keyed.request(method, url, json=body, headers=KEY)
    assert reply.headers["content-type"] == "application/json"
    assert echoed(reply) == {"job": job, "access_token": False}


async def test_an_upstream_status_and_body_pass_through(keyed: httpx.AsyncClient) -> None:
    reply = await keyed.get("/conversation/missing-42", headers=KEY)
    assert reply.status_code == 404
    assert reply.json() == {"detail": "Can't load conversation missing-42"}  # the upstream's, not ours


# ---- a conversation turn: the upstream's events as SSE ----------------------------------------------


async def read_events(reply: httpx.Response) -> list[Any]:
    """Every `data:` payload of a stream (`[DONE]` as the string), checking the framing."""
    raw = (await reply.aread()).decode()
    assert raw.endswith("\n\n")
    payloads: list[Any] = []
    for block in raw.split("\n\n")[:-1]:
        assert block.startswith("data: "), block
        data = block[6:]
        payloads.append(data if data == "[DONE]" else orjson.loads(data))
    return payloads


@pytest.mark.parametrize("named", [True, False], ids=["model named", "any worker"])
async def test_a_turn_streams_the_events_in_order_then_done(keyed: httpx.AsyncClient, named: bool) -> None:
    body = turn(fake={"gap": 0.01})
    if not named:
        del body["model"]
    async with keyed.stream("POST", "/conversation", json=body, headers=KEY) as reply:
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/event-stream")
        events = await read_events(reply)
    assert events == [web_event(0), web_event(1), web_event(2, last=True), "[DONE]"]


async def test_a_turn_refused_before_its_first_event_keeps_the_upstream_status(keyed: httpx.AsyncClient) -> None:
    reply = await keyed.post("/conversation", json=turn(fake={"status": 429}), headers=KEY)
    assert reply.status_code == 429
    assert reply.headers["content-type"] == "application/json"
    assert reply.json() == {"detail": "Too many requests in 1 hour."}


async def test_a_turn_failing_after_its_first_event_ends_in_band(keyed: httpx.AsyncClient) -> None:
    body = turn(fake={"fail": "upstream_error", "fail_after": 1})
    async with keyed.stream("POST", "/conversation", json=body, headers=KEY) as reply:
        assert reply.status_code == 200
        events = await read_events(reply)
    assert events[0] == web_event(0)
    assert events[1]["error"]["code"] == "upstream_error"
    assert events[2:] == ["[DONE]"]


async def test_a_client_gone_mid_turn_cancels_the_job(keyed: httpx.AsyncClient, keyed_edge: Proc,
                                                      events_file: Path) -> None:
    def lines() -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in events_file.read_bytes().splitlines()]

    before = len(lines())
    cancels = metric((await keyed.get("/metrics")).text, "switchyard_edge_cancellations_total",
                     reason="client_disconnected")
    async with keyed.stream("POST", "/conversation", json=turn(fake={"hang_after": 1}), headers=KEY) as reply:
        async for line in reply.aiter_lines():
            if line.startswith("data: "):
                assert orjson.loads(line[6:]) == web_event(0)
                break  # leaving the block closes the connection mid-stream
    started = [e for e in lines()[before:] if e["event"] == "started"]
    assert len(started) == 1
    job_id = started[0]["job_id"]
    deadline = time.monotonic() + 2.0  # the worker's idle limit (3 s at this time scale) is not what ends it
    while not any(e["event"] == "cancelled" and e["job_id"] == job_id for e in lines()):
        assert time.monotonic() < deadline, "the job was not cancelled after the client left"
        await asyncio.sleep(0.02)
    after = metric((await keyed.get("/metrics")).text, "switchyard_edge_cancellations_total",
                   reason="client_disconnected")
    assert after == cancels + 1


# ---- what the edge refuses itself -------------------------------------------------------------------

ROOT = {"action": "next", "messages": [MESSAGE], "parent_message_id": "p-1"}
INVALID = [
    ("GET", "/conversations?limit=101", None, "limit", "invalid_value"),
    ("GET", "/conversations?limit=0", None, "limit", "invalid_value"),
    ("GET", "/conversations?limit=ten", None, "limit", "invalid_value"),
    ("GET", "/conversations?offset=-1", None, "offset", "invalid_value"),
    ("GET", "/conversations?offset=1.5", None, "offset", "invalid_value"),
    ("GET", "/conversation/not_an_id", None, "conversation_id", "invalid_value"),
    ("GET", "/conversation/" + "a" * 65, None, "conversation_id", "invalid_value"),
    ("POST", "/conversation/gen_title/a.b", {"message_id": "a-1"}, "conversation_id", "invalid_value"),
    ("POST", "/conversation", {**ROOT, "action": "reply"}, "action", "invalid_value"),
    ("POST", "/conversation", {k: v for k, v in ROOT.items() if k != "action"}, "action",
     "missing_required_parameter"),
    ("POST", "/conversation", {**ROOT, "messages": None}, "messages", "missing_required_parameter"),
    ("POST", "/conversation", {**ROOT, "action": "variant", "messages": None}, "messages",
     "missing_required_parameter"),
    ("POST", "/conversation", {**ROOT, "messages": []}, "messages", "invalid_value"),
    ("POST", "/conversation", {**ROOT, "messages": ["Hello"]}, "messages[0]", "invalid_type"),
    ("POST", "/conversation", {**ROOT, "messages": [{k: v for k, v in MESSAGE.items() if k != "id"}]},
     "messages[0].id", "missing_required_parameter"),
    ("POST", "/conversation", {**ROOT, "messages": [{k: v for k, v in MESSAGE.items() if k != "author"}]},
     "messages[0].author.role", "missing_required_parameter"),
    ("POST", "/conversation", {**ROOT, "messages": [{**MESSAGE, "content": {"content_type": "text"}}]},
     "messages[0].content.parts", "missing_required_parameter"),
    ("POST", "/conversation", {**ROOT, "messages": [{**MESSAGE, "content": {"parts": ["x"]}}]},
     "messages[0].content.content_type", "missing_required_parameter"),
    ("POST", "/conversation", {**ROOT, "messages": [{**MESSAGE, "content": {"content_type": "text", "parts": "x"}}]},
     "messages[0].content.parts", "invalid_type"),
    ("POST", "/conversation", {**ROOT, "parent_message_id": None}, "parent_message_id", "missing_required_parameter"),
    ("POST", "/conversation", {**ROOT, "parent_message_id": 7}, "parent_message_id", "invalid_type"),
    ("POST", "/conversation", {**ROOT, "conversation_id": 7}, "conversation_id", "invalid_type"),
    ("POST", "/conversation", {**ROOT, "model": ["gpt-4"]}, "model", "invalid_type"),
    ("POST", "/conversation", [ROOT], None, "invalid_type"),
    ("POST", "/conversation/gen_title/c-1", {}, "message_id", "missing_required_parameter"),
    ("PATCH", "/conversation/c-1", {}, "title", "missing_required_parameter"),
    ("PATCH", "/conversation/c-1", {"title": 5}, "title", "invalid_type"),
    ("POST", "/conversation/c-1", {"is_visible": "no"}, "is_visible", "invalid_type"),
    ("PATCH", "/conversations", {}, "is_visible", "missing_required_parameter"),
    ("POST", "/conversation/message_feedback", {**FEEDBACK, "rating": "meh"}, "rating", "invalid_value"),
    ("POST", "/conversation/message_feedback", {**FEEDBACK, "conversation_id": None}, "conversation_id",
     "missing_required_parameter"),
    ("POST", "/conversation/message_feedback", {**FEEDBACK, "tags": "x"}, "tags", "invalid_type"),
    ("POST", "/auth/login", {"username": "someone@example.com"}, "password", "missing_required_parameter"),
    ("POST", "/auth/login", {"username": 1, "password": "x"}, "username", "invalid_type"),
]


@pytest.mark.parametrize(("method", "url", "body", "param", "code"), INVALID,
                         ids=[f"{m} {u[:40]} {p}" for m, u, _, p, _ in INVALID])
async def test_invalid_calls_are_400s_naming_the_field(
    keyed: httpx.AsyncClient, method: str, url: str, body: Any, param: str | None, code: str,
) -> None:
    reply = await keyed.request(method, url, json=body, headers=KEY)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert (error["param"], error["code"], error["type"]) == (param, code, "invalid_request_error")
    assert error["message"]


async def test_a_model_no_chatgpt_web_worker_serves_is_a_404_naming_those_it_does(keyed: httpx.AsyncClient) -> None:
    reply = await keyed.post("/conversation", json=turn(model="no-such-slug"), headers=KEY)
    assert reply.status_code == 404
    error = reply.json()["error"]
    assert error["code"] == "model_not_found" and MODEL in error["message"]


@pytest.fixture(scope="module")
def workerless_edge(private_nats: Proc, log_dir: Path) -> Iterator[Proc]:
    """An edge on a NATS no worker is connected to."""
    edge = start_edge(private_nats.url, log_dir, name="edge-no-worker")
    yield edge
    edge.stop()


@pytest.mark.parametrize(("method", "url", "body"), [("GET", "/conversations", None),
                                                     ("POST", "/conversation", turn()),
                                                     ("POST", "/auth/login", LOGIN)])
async def test_no_chatgpt_web_worker_is_a_503_saying_so(
    workerless_edge: Proc, method: str, url: str, body: Any,
) -> None:
    async with httpx.AsyncClient(base_url=workerless_edge.url, timeout=20) as client:
        reply = await client.request(method, url, json=body, headers=KEY)
    assert reply.status_code == 503
    error = reply.json()["error"]
    assert error["code"] == "no_worker"
    assert "chatgpt-web-worker" in error["message"]


# ---- whose credential: the gateway's key and the caller's ChatGPT access token ----------------------


@pytest.mark.parametrize(("headers", "token"), [
    ({"authorization": f"Bearer {ACCESS_TOKEN}", "x-api-key": AUTH_KEY}, True),
    ({"authorization": ACCESS_TOKEN, "x-api-key": AUTH_KEY}, True),  # without `Bearer `, as go-chatgpt-api took it
    ({"x-authorization": f"Bearer {ACCESS_TOKEN}", "authorization": f"Bearer {AUTH_KEY}"}, True),
    ({"x-authorization": ACCESS_TOKEN, "x-api-key": AUTH_KEY}, True),
    ({"authorization": f"Bearer {AUTH_KEY}"}, False),
    ({"authorization": AUTH_KEY}, False),
    ({"x-api-key": AUTH_KEY}, False),
], ids=["jwt+x-api-key", "bare jwt+x-api-key", "x-authorization jwt+bearer key", "x-authorization+x-api-key",
        "bearer key", "bare key", "x-api-key only"])
async def test_keyed_gateway_takes_the_key_and_relays_the_access_token(
    keyed: httpx.AsyncClient, wiretap: Wiretap, headers: dict[str, str], token: bool,
) -> None:
    seen = len(wiretap.messages)
    assert echoed(await keyed.get("/conversations", headers=headers))["access_token"] is token
    # by job id: a job published without confirmation is published again to confirm it
    jobs = {m["job_id"]: m for _, m in wiretap.messages[seen:] if m.get("type") == "job" and m["kind"] == "chatgpt_web"}
    assert [job.get("access_token") for job in jobs.values()] == [ACCESS_TOKEN if token else None]


@pytest.mark.parametrize("headers", [
    {"authorization": f"Bearer {ACCESS_TOKEN}"},
    {"x-authorization": ACCESS_TOKEN},
    {},
    {"authorization": f"Bearer {ACCESS_TOKEN}", "x-api-key": "not-the-key"},
    {"authorization": "Bearer not-the-key"},
], ids=["jwt, no key", "x-authorization jwt, no key", "nothing", "jwt, wrong key", "wrong key"])
async def test_keyed_gateway_refuses_a_call_without_its_key(keyed: httpx.AsyncClient, headers: dict[str, str]) -> None:
    reply = await keyed.post("/conversation", json=turn(), headers=headers)
    assert reply.status_code == 401
    assert reply.json()["error"]["code"] == "invalid_api_key"


async def test_openai_routes_still_want_a_bearer_key(keyed: httpx.AsyncClient) -> None:
    assert (await keyed.get("/v1/models", headers={"x-api-key": AUTH_KEY})).status_code == 401
    assert (await keyed.get("/v1/models", headers={"authorization": AUTH_KEY})).status_code == 401
    assert (await keyed.get("/v1/models", headers=KEY)).status_code == 200


@pytest.mark.parametrize(("headers", "token"), [
    ({"authorization": f"Bearer {ACCESS_TOKEN}"}, True),
    ({"x-authorization": ACCESS_TOKEN}, True),
    ({}, False),
    ({"authorization": "Bearer anything"}, False),
])
async def test_open_gateway_relays_the_access_token_and_wants_no_key(
    open_client: httpx.AsyncClient, headers: dict[str, str], token: bool,
) -> None:
    assert echoed(await open_client.get("/conversations", headers=headers))["access_token"] is token
    async with open_client.stream("POST", "/conversation", json=turn(), headers=headers) as reply:
        assert reply.status_code == 200
        assert (await read_events(reply))[-1] == "[DONE]"


async def test_no_edge_log_holds_the_access_token_or_the_password(
    keyed: httpx.AsyncClient, open_client: httpx.AsyncClient, keyed_edge: Proc, open_edge: Proc,
) -> None:
    for client, headers in ((keyed, {"authorization": ACCESS_TOKEN, "x-api-key": AUTH_KEY}),
                            (open_client, {"x-authorization": f"Bearer {ACCESS_TOKEN}"})):
        login = {"username": "someone@example.com", "password": PASSWORD, "extra": {"x": 1}}
        assert echoed(await client.post("/auth/login", json=login, headers=headers))["access_token"] is True
        assert (await client.post("/auth/login", json={"password": PASSWORD}, headers=headers)).status_code == 400
        async with client.stream("POST", "/conversation", json=turn(), headers=headers) as reply:
            await reply.aread()
    for edge in (keyed_edge, open_edge):
        log = edge.log()
        assert "POST /auth/login 200" in log and "POST /conversation 200" in log  # the access log is there
        assert ACCESS_TOKEN not in log and ACCESS_TOKEN[:40] not in log
        assert PASSWORD not in log


# ---- bodies drawn from the OpenAPI document (tests/integration/test_openapi_fuzz.py does the /v1 routes) ----

FUZZ = settings(max_examples=15, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
FUZZ_PATH = {"/conversation/{id}": "/conversation/c-1", "/conversation/gen_title/{id}": "/conversation/gen_title/c-1"}


def fuzz_chatgpt_route(base_url: str, path: str, schema: dict[str, Any], document: dict[str, Any]) -> dict[int, int]:
    statuses: dict[int, int] = {}
    with httpx.Client(base_url=base_url, headers=KEY, timeout=30) as http:

        def post(body: Any) -> httpx.Response:
            content = json.dumps(body, ensure_ascii=False).encode()  # nests deeper than orjson writes
            response = http.post(FUZZ_PATH.get(path, path), content=content,
                                 headers={"content-type": "application/json"})
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            assert response.status_code < 500, (body, response.text[:500])
            if response.status_code >= 400:
                error = response.json()["error"]
                assert error["message"] and error["type"] and "param" in error and "code" in error, error
            return response

        @FUZZ
        @given(valid_bodies(schema, document))
        def valid(body: dict[str, Any]) -> None:
            if "model" in body:
                body["model"] = MODEL  # a model the worker serves: the call reaches it
            assert post(body).status_code == 200

        @FUZZ
        @given(broken_bodies(schema, document))
        def broken(body: Any) -> None:
            if isinstance(body, dict) and isinstance(body.get("model"), str) and body["model"]:
                body = {**body, "model": MODEL}
            post(body)

        valid()
        if _required(schema, document):  # a body without required fields has nothing to leave out
            broken()
    return statuses


def _required(schema: dict[str, Any], document: dict[str, Any]) -> list[str]:
    required: list[str] = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]].get("required", [])
    return required


async def test_bodies_the_document_allows_reach_the_worker_and_broken_ones_are_4xx(keyed: httpx.AsyncClient) -> None:
    document = (await keyed.get("/openapi.json")).json()
    posts = {path: item["post"] for path, item in document["paths"].items()
             if "post" in item and item["post"]["operationId"].startswith("chatgpt")}
    assert len(posts) == 6
    for path, operation in posts.items():
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        # a thread for the blocking client, so the session's loop (the bus wiretap) keeps running
        statuses = await asyncio.to_thread(fuzz_chatgpt_route, str(keyed.base_url), path, schema, document)
        # every valid body got its 200 (`valid` checks); a small body (`{"is_visible": ...}`) has few forms
        assert statuses.get(200, 0) >= 2, (path, statuses)
