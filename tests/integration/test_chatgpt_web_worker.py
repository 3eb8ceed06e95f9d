"""chatgpt-web-worker end to end: the official `openai` SDK and httpx through a real edge, two real
worker replicas sharing one pool of three accounts in JetStream KV, and the sandbox's fake of the
ChatGPT web backend (services/sandbox/chatgpt/, faithful to the fact sheet, sharing no code with
the worker). What the fake saw (`/_sandbox/chatgpt/requests`, `/stats`) is how the tests judge the
worker: which account ran a turn, what messages it sent, how many turns ran at once per account.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import pytest_asyncio

from libs.devproc import Proc, free_port, spawn_python_service
from libs.tokens import chat_usage
from tests.conftest import AUTH_KEY, service_env, start_edge

USERS = ("alice", "bob", "carol")
POOL = "chatgpt-web"


@dataclass
class Web:
    """The module's stack: its own edge (restarted by a test), two worker replicas, the fake."""

    nats_url: str
    fake: str  # the sandbox's base URL
    log_dir: Path
    accounts_file: Path
    edge: Proc
    workers: list[Proc] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return self.edge.url + "/v1"

    def start_worker(self, name: str) -> Proc:
        port = free_port()
        env = service_env(self.nats_url, PORT=str(port), WORKER_POOL=POOL, WORKER_ID=name,
                          CHATGPT_BASE_URL=self.fake, CHATGPT_ACCOUNTS_FILE=str(self.accounts_file))
        proc = spawn_python_service(name, "services.chatgpt_web_worker", env=env, log_dir=self.log_dir,
                                    health_url=f"http://127.0.0.1:{port}/readyz")
        proc.url = f"http://127.0.0.1:{port}"
        return proc


async def fake(web: Web, method: str, path: str, **kwargs: Any) -> Any:
    async with httpx.AsyncClient(base_url=web.fake, timeout=10) as http:
        response = await http.request(method, "/_sandbox/chatgpt" + path, **kwargs)
        response.raise_for_status()
        return response.json()


async def wait_live(web: Web, model: str = "gpt-4o", within: float = 15.0) -> None:
    async with httpx.AsyncClient(headers={"authorization": f"Bearer {AUTH_KEY}"}) as http:
        deadline = asyncio.get_running_loop().time() + within
        while True:
            listed = {m["id"] for m in (await http.get(web.base_url + "/models")).json()["data"]}
            if model in listed:
                return
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{model} never became live")
            await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
def web(stack: Any, sandbox: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    folder = tmp_path_factory.mktemp("chatgpt-web")
    accounts = folder / "accounts.toml"
    accounts.write_text("".join(f'[[accounts]]\nname = "{u}"\nsession_token = "sandbox-session-{u}"\n\n'
                                for u in USERS))
    edge = start_edge(stack.nats_url, stack.log_dir, name="edge-web")
    web = Web(stack.nats_url, sandbox.url, stack.log_dir, accounts, edge)
    httpx.post(sandbox.url + "/_sandbox/chatgpt/reset").raise_for_status()
    web.workers = [web.start_worker("web-1"), web.start_worker("web-2")]
    try:
        yield web
    finally:
        for proc in [web.edge, *web.workers]:
            proc.stop()


@pytest_asyncio.fixture
async def sdk(web: Web) -> AsyncIterator[openai.AsyncOpenAI]:
    await wait_live(web)
    async with openai.AsyncOpenAI(base_url=web.base_url, api_key=AUTH_KEY, max_retries=0, timeout=30) as client:
        yield client


async def turns(web: Web) -> list[dict[str, Any]]:
    return [r for r in (await fake(web, "GET", "/requests"))["requests"]
            if r["path"] == "/backend-api/conversation" and r["method"] == "POST"]


# ---- OpenAI chat through web accounts ------------------------------------------------------------


async def test_a_chat_answers_with_the_slug_the_upstream_used(sdk: openai.AsyncOpenAI) -> None:
    raw = await sdk.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "name a colour"}])
    completion = raw.parse()
    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "gpt-4o"  # what the fake says `auto` ran on: no silent relabel
    assert raw.headers["x-switchyard-requested-model"] == "auto"
    assert raw.headers["x-switchyard-conversation"] == "new"
    # usage from a real tokenizer: the prompt as OpenAI counts it, the answer's own tokens
    expected = chat_usage([{"role": "user", "content": "name a colour"}],
                          completion.choices[0].message.content, "gpt-4o")
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == expected["prompt_tokens"]
    assert completion.usage.completion_tokens == expected["completion_tokens"]


async def test_streamed_and_whole_answers_agree(sdk: openai.AsyncOpenAI) -> None:
    messages: Any = [{"role": "user", "content": "say something [sandbox tokens=12]"}]
    whole = await sdk.chat.completions.create(model="gpt-4o-mini", messages=messages)
    stream = await sdk.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True)
    text = ""
    finish = None
    async for chunk in stream:
        assert chunk.model == "gpt-4o-mini"
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    assert text == whole.choices[0].message.content
    assert len(text.split()) == 12 and finish == "stop"


async def test_an_openai_model_name_runs_on_its_mapped_slug(web: Web, sdk: openai.AsyncOpenAI) -> None:
    answer = await sdk.chat.completions.create(model="gpt-3.5-turbo", messages=[{"role": "user", "content": "hi"}])
    assert answer.model == "text-davinci-002-render-sha"
    assert (await turns(web))[-1]["model"] == "text-davinci-002-render-sha"


async def test_n_choices_run_on_different_accounts(web: Web, sdk: openai.AsyncOpenAI) -> None:
    before = len(await turns(web))
    answer = await sdk.chat.completions.create(
        model="gpt-4o", n=3, messages=[{"role": "user", "content": "three ways [sandbox token_delay_ms=20]"}])
    assert sorted(c.index for c in answer.choices) == [0, 1, 2]
    ran = (await turns(web))[before:]
    assert len(ran) == 3 and {r["user"] for r in ran} == set(USERS)


async def test_web_accounts_take_text_only(sdk: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        await sdk.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.invalid/cat.png"}}]}])
    assert refused.value.body["param"] == "messages[0].content[0]"  # type: ignore[index]


# ---- conversation continuity ---------------------------------------------------------------------


async def test_a_follow_up_continues_the_web_conversation_across_restarts(web: Web, sdk: openai.AsyncOpenAI) -> None:
    first: Any = [{"role": "user", "content": "remember the number seven"}]
    one = await sdk.chat.completions.with_raw_response.create(model="gpt-4o", messages=first)
    answer = one.parse().choices[0].message.content
    conversation = one.headers["x-switchyard-conversation-id"]
    parent = one.headers["x-switchyard-parent-message-id"]
    owner = (await turns(web))[-1]["user"]

    # the edge and both workers restart: the mapping lives in JetStream KV, not in a process
    web.edge.stop()
    for proc in web.workers:
        proc.stop()
    web.edge = start_edge(web.nats_url, web.log_dir, name="edge-web")
    web.workers = [web.start_worker("web-1"), web.start_worker("web-2")]
    await wait_live(web)
    async with openai.AsyncOpenAI(base_url=web.base_url, api_key=AUTH_KEY, max_retries=0, timeout=30) as again:
        second: Any = [*first, {"role": "assistant", "content": answer}, {"role": "user", "content": "which number?"}]
        two = await again.chat.completions.with_raw_response.create(model="gpt-4o", messages=second)
    assert two.headers["x-switchyard-conversation"] == "continued"
    assert two.headers["x-switchyard-conversation-id"] == conversation
    seen = (await turns(web))[-1]
    assert seen["user"] == owner and seen["conversation_id"] == conversation
    assert seen["parent_message_id"] == parent
    assert [m["text"] for m in seen["messages"]] == ["which number?"]  # only the new message went upstream


async def test_explicit_conversation_ids_continue_that_conversation(web: Web, sdk: openai.AsyncOpenAI) -> None:
    one = await sdk.chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "user", "content": "start here"}])
    conversation = one.headers["x-switchyard-conversation-id"]
    parent = one.headers["x-switchyard-parent-message-id"]
    await sdk.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "and go on"}],
        extra_body={"conversation_id": conversation, "parent_message_id": parent})
    seen = (await turns(web))[-1]
    assert seen["conversation_id"] == conversation and seen["parent_message_id"] == parent
    assert [m["text"] for m in seen["messages"]] == ["and go on"]
