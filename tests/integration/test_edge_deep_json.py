"""A body nested deeper than the edge's limit is a clear 400 naming the limit, never a 500 (orjson
parses 1024 levels but serialises only 254): through the real edge, in a message and in a tool's
`parameters` schema."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from services.edge.asgi_io import MAX_JSON_DEPTH
from tests.conftest import AUTH_KEY, Stack

AUTH = {"authorization": f"Bearer {AUTH_KEY}", "content-type": "application/json"}
HI = b'[{"role":"user","content":"hi"}]'


def nested_objects(levels: int) -> bytes:
    """`{"items":{"items":...{}}}`, `levels` objects deep, written as bytes (no serialiser nests this far)."""
    return b'{"items":' * (levels - 1) + b"{}" + b"}" * (levels - 1)


def in_a_message(depth: int) -> bytes:
    # body (1) > messages (2) > message (3) > an extra field, nested to reach `depth` overall
    return (b'{"model":"sandbox-chat","messages":[{"role":"user","content":"hi","extra":'
            + b"[" * (depth - 3) + b"]" * (depth - 3) + b"}]}")


def in_a_tool_schema(depth: int) -> bytes:
    # body (1) > tools (2) > tool (3) > function (4) > parameters (5) > properties (6) > a property
    return (b'{"model":"sandbox-chat","messages":' + HI + b',"tools":[{"type":"function","function":{"name":"f",'
            b'"parameters":{"type":"object","properties":{"a":' + nested_objects(depth - 6) + b"}}}}]}")


@pytest.mark.parametrize("depth", [255, 300, 1024, 100_000])
@pytest.mark.parametrize("where", [in_a_message, in_a_tool_schema], ids=["message", "tool_parameters"])
async def test_a_body_nested_too_deep_is_a_400_naming_the_limit(stack: Stack, where: Callable[[int], bytes], depth: int
) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        reply = await http.post(stack.base_url + "/chat/completions", content=where(depth), headers=AUTH)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["code"] == "nesting_too_deep" and error["param"] is None
    assert f"more than {MAX_JSON_DEPTH} levels deep" in error["message"]
    assert "Traceback" not in stack.procs[0].log()  # procs[0] is the session's edge


@pytest.mark.parametrize("where", [in_a_message, in_a_tool_schema], ids=["message", "tool_parameters"])
async def test_a_body_at_the_limit_is_served_and_one_level_more_is_refused(stack: Stack, where: Callable[[int], bytes]
) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        at_limit = await http.post(stack.base_url + "/chat/completions", content=where(MAX_JSON_DEPTH), headers=AUTH)
        beyond = await http.post(stack.base_url + "/chat/completions", content=where(MAX_JSON_DEPTH + 1),
                                 headers=AUTH)
    assert at_limit.status_code == 200, at_limit.text
    assert beyond.status_code == 400 and beyond.json()["error"]["code"] == "nesting_too_deep"


async def test_brackets_inside_strings_are_text_not_nesting(stack: Stack) -> None:
    text = "[{" * 5000
    body = b'{"model":"sandbox-chat","messages":[{"role":"user","content":"' + text.encode() + b'"}]}'
    async with httpx.AsyncClient(timeout=30) as http:
        reply = await http.post(stack.base_url + "/chat/completions", content=body, headers=AUTH)
    assert reply.status_code == 200, reply.text
