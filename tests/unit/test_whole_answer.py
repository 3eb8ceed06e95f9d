"""A non-stream request's whole upstream answer: its shape on the bus, its usage, and what a
broken answer becomes (scripted upstreams on loopback sockets)."""

from __future__ import annotations

import asyncio

import pytest

from libs.errors import UpstreamAuthError, UpstreamError, UpstreamProtocolError
from libs.http1 import HTTP1Pool
from libs.openai_upstream import call as upstream_module
from libs.openai_upstream.call import UpstreamCall
from libs.openai_upstream.config import Upstream
from libs.tokens import usage as _usage
from services.openai_worker.backend import _as_delta
from tests.unit.test_http1 import Handler, read_request, serve


def test_a_whole_chat_choice_becomes_one_delta_with_numbered_tool_calls() -> None:
    calls = [{"id": "call_a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
             {"id": "call_b", "type": "function", "function": {"name": "g", "arguments": "{\"x\":1}"}}]
    choice = {"index": 2, "message": {"role": "assistant", "content": None, "tool_calls": calls},
              "logprobs": None, "finish_reason": "tool_calls"}
    delta = _as_delta(choice)
    assert delta["index"] == 2 and delta["finish_reason"] == "tool_calls"
    assert [c["index"] for c in delta["delta"]["tool_calls"]] == [0, 1]
    assert delta["delta"]["tool_calls"][1]["function"] == calls[1]["function"]


def test_a_text_completion_choice_passes_as_it_is() -> None:
    choice = {"index": 0, "text": "hello", "logprobs": None, "finish_reason": "stop"}
    assert _as_delta(choice) is choice


def test_usage_is_the_upstreams_else_an_estimate_marked_so() -> None:
    body = {"messages": [{"role": "user", "content": "twelve chars"}]}
    assert _usage({"prompt_tokens": 3, "completion_tokens": 4}, body, "ignored") == {
        "prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7, "estimated": False}
    estimate = _usage(None, body, "eight ch")
    assert estimate == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5, "estimated": True}


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'{"object": "chat.completion"}'])
async def test_an_unreadable_whole_answer_is_a_protocol_error(body: bytes) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                     % (len(body), body))
        await writer.drain()

    with pytest.raises(UpstreamProtocolError):
        await answer_from(handler)


async def answer_from(handler: Handler) -> dict[str, object]:
    async with serve(handler) as server:
        pool = HTTP1Pool()
        upstream = Upstream("scripted", f"http://127.0.0.1:{server.port}/v1", "", ("m",))
        try:
            return await UpstreamCall(None, pool, upstream, None, "/chat/completions", {"model": "m"}).answer()
        finally:
            await pool.aclose()


async def test_a_whole_answer_over_the_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upstream_module, "_MAX_ANSWER_BODY", 1 << 20)  # 1 MiB here instead of 64

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % (2 << 20))
        writer.write(b"x" * (2 << 20))
        await writer.drain()

    with pytest.raises(UpstreamProtocolError, match="over 1 MiB"):
        await answer_from(handler)


@pytest.mark.parametrize(("reply", "error", "message"), [
    (b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"choices\"", UpstreamProtocolError, "broke off"),
    (b"", UpstreamError, "closed unanswered"),
    (b"HTTP/1.1 503 Busy\r\ncontent-length: 21\r\n\r\n{\"error\": \"overload\"}", UpstreamError, "answered 503"),
    (b"HTTP/1.1 401 No\r\ncontent-length: 2\r\n\r\n{}", UpstreamAuthError, "credentials were refused"),
])
async def test_whole_answer_failures_become_typed_upstream_errors(
    reply: bytes, error: type[Exception], message: str
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        writer.write(reply)
        await writer.drain()

    with pytest.raises(error, match=message):
        await answer_from(handler)


async def test_a_whole_answer_goes_back_on_a_kept_alive_connection() -> None:
    answer = b'{"object": "chat.completion", "choices": [{"index": 0, "message": {"content": "hi"}}]}'

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        while True:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n%s" % (len(answer), answer))
            await writer.drain()

    async with serve(handler) as server:
        pool = HTTP1Pool()
        upstream = Upstream("scripted", f"http://127.0.0.1:{server.port}/v1", "", ("m",))
        try:
            for _ in range(3):
                got = await UpstreamCall(None, pool, upstream, None, "/chat/completions", {"model": "m"}).answer()
                assert got["choices"][0]["message"]["content"] == "hi"
        finally:
            await pool.aclose()
        assert server.connections == 1
