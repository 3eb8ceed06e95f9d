"""Bodies drawn from the OpenAPI document, sent to the running edge for every POST route it documents.

Valid bodies (for a model no worker serves) must pass validation and get a clean 404
model_not_found; broken ones (tests/schema_strategies.py: wrong types, missing required fields,
extra fields, huge, deep or odd-unicode values, non-objects) a 4xx. Never a 5xx, and every error
is OpenAI-shaped. Chat also goes to a sandbox model, with small answers. Random bodies without a
schema are tests/integration/test_fuzz_edge.py's; the validators alone, tests/unit/test_fuzz_requests.py.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from services.edge.openapi import openapi_document
from tests.conftest import AUTH_KEY, Stack
from tests.schema_strategies import broken_bodies, valid_bodies

UNSERVED = "fuzz-no-such-model"  # matches no route: a valid body ends at a 404, never a queue wait
SETTINGS = settings(max_examples=40, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
SANDBOX_MESSAGES = [{"role": "user", "content": "fuzz [sandbox tokens=2]"}]


def check_answer(response: httpx.Response, sent: Any) -> None:
    assert response.status_code < 500, (sent, response.status_code, response.text[:500])
    if response.status_code >= 300:
        error = response.json()["error"]
        assert type(error["message"]) is str and error["message"] and type(error["type"]) is str, error
        assert "param" in error and "code" in error, error


def is_routed(http: httpx.Client, path: str) -> bool:
    """Whether the edge serves `path` (the routes of issue 11 land separately: until then, 404)."""
    response = http.post(path, json={})
    check_answer(response, {})
    return not (response.status_code == 404 and response.json()["error"]["code"] == "not_found")


def fuzz_route(
    base_url: str, path: str, schema: dict[str, Any], document: dict[str, Any]
) -> tuple[dict[int, int], bool]:
    statuses: dict[int, int] = {}
    model_required = "model" in _resolved(schema, document).get("required", [])
    with httpx.Client(base_url=base_url, headers={"authorization": f"Bearer {AUTH_KEY}"}, timeout=30) as http:
        routed = is_routed(http, path)

        def post(body: Any) -> httpx.Response:
            # the standard library's encoder: orjson stops at 254 levels, and some bodies nest deeper
            content = json.dumps(body, ensure_ascii=False).encode()
            response = http.post(path, content=content, headers={"content-type": "application/json"})
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            check_answer(response, body)
            return response

        @SETTINGS
        @given(valid_bodies(schema, document))
        def valid(body: dict[str, Any]) -> None:
            best_of, n = body.get("best_of"), body.get("n")
            if best_of is not None and n is not None and best_of < n:
                body["best_of"] = n  # a constraint the document states in words only
            response = post({**body, "model": UNSERVED})
            assert response.status_code == 404, (body, response.text)
            assert response.json()["error"]["code"] == ("model_not_found" if routed else "not_found")

        @SETTINGS
        @given(broken_bodies(schema, document))
        @example({"input": "[sandbox hang=1]", "0": None})  # found by this test: a served default model
        def broken(body: Any) -> None:
            if isinstance(body, dict) and body.get("model") is not None:
                body = {**body, "model": UNSERVED} if isinstance(body["model"], str) and body["model"] else body
            elif isinstance(body, dict) and "model" not in body and not model_required:
                # a route whose model is optional (moderations) picks a served one: a body it accepts
                # would reach a real upstream, whose answer (or `[sandbox hang=1]`) is not this test's
                body = {**body, "model": UNSERVED}
            post(body)

        valid()
        broken()
        # not JSON at all
        for raw in (b"", b"{", b'{"model":', b"\xff\xfe", b"[]" * 1000, b"null"):
            response = http.post(path, content=raw, headers={"content-type": "application/json"})
            check_answer(response, raw)
            assert 400 <= response.status_code < 500
    return statuses, routed


def fuzz_sandbox_chat(base_url: str, schema: dict[str, Any], document: dict[str, Any]) -> dict[int, int]:
    """Chat bodies the document allows, answered by a real worker and upstream (small answers)."""
    statuses: dict[int, int] = {}
    with httpx.Client(base_url=base_url, headers={"authorization": f"Bearer {AUTH_KEY}"}, timeout=30) as http:

        @SETTINGS
        @given(valid_bodies(schema, document), st.integers(1, 2))
        def answered(body: dict[str, Any], n: int) -> None:
            body = {**body, "model": "sandbox-chat", "messages": SANDBOX_MESSAGES, "n": n}
            response = http.post("/v1/chat/completions", json=body)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            check_answer(response, body)

        answered()
    return statuses


def _resolved(schema: dict[str, Any], document: dict[str, Any]) -> dict[str, Any]:
    """A schema, or the component its `$ref` names (`#/components/schemas/<name>`)."""
    ref = schema.get("$ref")
    if not isinstance(ref, str):
        return schema
    found: dict[str, Any] = document["components"]["schemas"][ref.rsplit("/", 1)[1]]
    return found


async def served_document(stack: Stack) -> dict[str, Any]:
    """The edge's own document, as it serves it (without a key)."""
    async with httpx.AsyncClient() as http:
        response = await http.get(stack.edge_url + "/openapi.json")
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    assert document == openapi_document(max_n=128)  # the stack's edge runs with the default MAX_N
    return document


async def test_every_post_route_of_the_document(stack: Stack) -> None:
    document = await served_document(stack)
    # go-chatgpt-api's routes need a chatgpt-web-worker: tests/integration/test_edge_chatgpt_routes.py fuzzes them
    posts = {path: item["post"] for path, item in document["paths"].items() if "post" in item and path[:4] == "/v1/"}
    assert len(posts) == 5
    for path, operation in posts.items():
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        # a thread for the blocking client, so the session's loop (the bus wiretap) keeps running
        statuses, routed = await asyncio.to_thread(fuzz_route, stack.edge_url, path, schema, document)
        assert statuses.get(404, 0) >= 20, (path, statuses)  # the valid bodies got through validation
        if routed:
            assert statuses.get(400, 0) >= 20, (path, statuses)  # and the broken ones did not
    chat = posts["/v1/chat/completions"]["requestBody"]["content"]["application/json"]["schema"]
    statuses = await asyncio.to_thread(fuzz_sandbox_chat, stack.edge_url, chat, document)
    assert statuses.get(200, 0) >= 15, statuses
    async with httpx.AsyncClient() as http:
        assert (await http.get(stack.edge_url + "/readyz")).status_code == 200
