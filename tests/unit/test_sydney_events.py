"""What an OpenAI chat client gets from a Bing turn: `message` events as content, three events as
extra delta fields (their JSON parsed), the conversation on the first delta, the rest dropped; and
what a `sydney` job relays (every event, in order, SydneyQt's names and payloads)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import pytest

from libs.bing.conversation import Conversation
from libs.bing.invocation import ChatRequest
from libs.bing.session import Opened, Who
from libs.bing.turn import SydneyEvent, TurnEnd, TurnItem
from libs.errors import InvalidRequest, UpstreamError
from libs.worker_backend import Event, Item, Meta, StreamEnd
from proto.messages import Job
from services.sydney_worker.chat import ChatTurns, decode_data_url
from services.sydney_worker.config import load_config
from services.sydney_worker.events import extra_field
from services.sydney_worker.native import NativeCalls, chat_request
from services.sydney_worker.sealing import Resume
from services.sydney_worker.turns import TurnRunner

CONVERSATION = Conversation("C1", "client-1", None, "sec-token-123456", None)
HANDED = {"conversationId": "C1", "clientId": "client-1", "secAccessToken": "sy1.alice.sealed"}
SEARCH = '[\n  {"index":1,"link":"https://x.test/a","title":"A"}\n]'


class FakeTurn:
    def __init__(self, items: list[Opened | TurnItem]) -> None:
        self.items = items
        self.account: str | None = "alice"
        self.handed: dict[str, Any] | None = HANDED
        self.output_seen: list[bool] = []

    async def _run(self, output: Callable[[SydneyEvent], bool]) -> AsyncIterator[Opened | TurnItem]:
        for item in self.items:
            if isinstance(item, SydneyEvent):
                self.output_seen.append(output(item))
            yield item


class FakeRunner:
    """TurnRunner's surface as chat.py and native.py use it."""

    def __init__(self, items: list[Opened | TurnItem]) -> None:
        self.fake = FakeTurn(items)
        self.requests: list[ChatRequest] = []
        self.calls = None

    def caller(self, job: Job) -> Who | None:
        return None

    def resume(self, value: Any, caller: Who | None) -> Resume | None:
        return None

    def turn(self, job: Job, request: ChatRequest, resume: Resume | None,
             output: Callable[[SydneyEvent], bool], caller: Who | None) -> Any:
        self.requests.append(request)
        fake = self.fake

        class _Turn:
            account = fake.account
            handed = fake.handed

            def __aiter__(self) -> AsyncIterator[Opened | TurnItem]:
                return fake._run(output)
        return _Turn()


def job(kind: str = "chat", model: str = "sydney-creative") -> Job:
    return cast(Job, {"kind": kind, "model": model, "job_id": "j", "index_offset": 0})


async def chat_items(items: list[Opened | TurnItem], body: dict[str, Any],
                     model: str = "sydney-creative") -> tuple[list[Item], FakeRunner]:
    runner = FakeRunner(items)
    turns = ChatTurns(load_config({}), cast(TurnRunner, runner))
    return [item async for item in turns.run(job(model=model), body)], runner


def deltas(items: list[Item]) -> list[dict[str, Any]]:
    return [c["delta"] for i in items if isinstance(i, list) for c in i]


async def test_events_become_content_and_extra_fields() -> None:
    items, runner = await chat_items([
        Opened(CONVERSATION, True),
        SydneyEvent("search_query", "Searching the web for: `x`"),  # dropped on this route
        SydneyEvent("search_result", SEARCH),  # waits for the first text
        SydneyEvent("message", "Hel"),
        SydneyEvent("loading", "Generating answers for you..."),  # dropped
        SydneyEvent("message", "lo!"),
        SydneyEvent("generative_image", '{"text":"a cat","url":"https://b.test/images/create?q=a+cat"}'),
        SydneyEvent("suggested_responses", '["Tell me more","Thanks"]'),
        TurnEnd(["Tell me more", "Thanks"], None),
    ], {"messages": [{"role": "user", "content": "hi"}]})
    meta = [i for i in items if isinstance(i, Meta)]
    assert meta == [Meta(model="sydney-creative", headers={"x-switchyard-conversation-id": "C1"})]
    assert items.index(meta[0]) < next(n for n, i in enumerate(items) if isinstance(i, list))  # before output
    assert deltas(items) == [
        {"role": "assistant", "content": "Hel", "conversation": HANDED,
         "search_results": [{"index": 1, "link": "https://x.test/a", "title": "A"}]},
        {"content": "lo!"},
        {"generative_image": {"text": "a cat", "url": "https://b.test/images/create?q=a+cat"}},
        {"suggested_responses": ["Tell me more", "Thanks"]},
        {},
    ]
    assert [c["finish_reason"] for i in items if isinstance(i, list) for c in i][-1] == "stop"
    end = items[-1]
    assert isinstance(end, StreamEnd) and end.account == "alice" and end.usage is not None
    # only text commits the answer: a retry before it stays possible
    assert runner.fake.output_seen == [False, False, True, False, True, False, False]
    request = runner.requests[0]
    assert request.prompt == "hi" and request.context == "" and request.style == "Creative"
    assert request.no_search and request.gpt4turbo and not request.classic


async def test_a_retry_drops_the_failed_attempts_extras() -> None:
    items, _ = await chat_items([
        Opened(CONVERSATION, True), SydneyEvent("search_result", SEARCH),
        Opened(CONVERSATION, True), SydneyEvent("message", "ok"), TurnEnd([], None),
    ], {"messages": [{"role": "user", "content": "hi"}]})
    assert deltas(items)[0] == {"role": "assistant", "content": "ok", "conversation": HANDED}


async def test_a_turn_without_text_is_an_upstream_error() -> None:
    with pytest.raises(UpstreamError, match="without an answer"):
        await chat_items([Opened(CONVERSATION, True), SydneyEvent("search_query", "q"), TurnEnd([], None)],
                         {"messages": [{"role": "user", "content": "hi"}]})


@pytest.mark.parametrize(("tool_choice", "no_search"), [(None, True), ("auto", False), ("none", False)])
async def test_tool_choice_null_or_absent_turns_search_off(tool_choice: Any, no_search: bool) -> None:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}]}
    if tool_choice is not None:
        body["tool_choice"] = tool_choice
    _, runner = await chat_items([Opened(CONVERSATION, True), SydneyEvent("message", "a"), TurnEnd([], None)], body,
                                 model="gpt-3.5-turbo-1106")
    assert runner.requests[0].no_search is no_search and runner.requests[0].style == "Balanced"


async def test_an_http_image_url_is_attached_as_is_and_messages_errors_are_400() -> None:
    content = [{"type": "text", "text": "what"}, {"type": "image_url", "image_url": {"url": "https://i.test/c.png"}}]
    _, runner = await chat_items([Opened(CONVERSATION, True), SydneyEvent("message", "a"), TurnEnd([], None)],
                                 {"messages": [{"role": "user", "content": content}]})
    assert runner.requests[0].image_url == "https://i.test/c.png"
    with pytest.raises(InvalidRequest, match="user prompt is missing") as refused:
        await chat_items([], {"messages": [{"role": "assistant", "content": "hi"}]})
    assert refused.value.param == "messages"


@pytest.mark.parametrize("url", ["data:image/png,abc", "data:image/png;base64,!!!", "data:image/png;base64,"])
def test_a_bad_data_url_is_a_400(url: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        decode_data_url(url)
    assert refused.value.param == "messages"


def test_extra_fields_parse_sydneyqts_json_text() -> None:
    assert extra_field(SydneyEvent("suggested_responses", '["a"]')) == ("suggested_responses", ["a"])
    assert extra_field(SydneyEvent("search_result", "not json")) is None
    assert extra_field(SydneyEvent("generated_code", "print(1)")) is None


async def test_a_sydney_job_relays_every_event_in_order() -> None:
    events = [SydneyEvent("search_query", "q"), SydneyEvent("message", "Hi"),
              SydneyEvent("suggested_responses", '["More"]')]
    runner = FakeRunner([Opened(CONVERSATION, True), *events, TurnEnd(["More"], None)])
    native = NativeCalls(cast(TurnRunner, runner))
    items = [i async for i in native.run(job("sydney"), {"op": "chat", "prompt": "hi", "context": "ctx",
                                                         "conversationStyle": "Precise", "noSearch": True})]
    assert items[:-1] == [Event({"type": e.type, "text": e.text}) for e in events]
    assert isinstance(items[-1], StreamEnd) and items[-1].account == "alice"
    assert runner.fake.output_seen == [True, True, True]
    request = runner.requests[0]
    assert (request.prompt, request.context, request.style, request.no_search) == ("hi", "ctx", "Precise", True)


@pytest.mark.parametrize(("body", "param"), [
    ({"op": "chat"}, "prompt"), ({"op": "chat", "prompt": 5}, "prompt"),
    ({"op": "chat", "prompt": "x", "noSearch": "yes"}, "noSearch"),
    ({"op": "chat", "prompt": "x", "plugins": [1]}, "plugins"),
])
def test_a_bad_sydney_chat_body_names_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        chat_request(body)
    assert refused.value.param == param


def test_an_empty_style_is_creative() -> None:
    assert chat_request({"prompt": "x", "conversationStyle": ""}).style == "Creative"
