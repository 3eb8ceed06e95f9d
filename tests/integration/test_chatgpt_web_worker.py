"""chatgpt-web-worker end to end: the official `openai` SDK and httpx through a real edge, two real
worker replicas sharing one pool of three accounts in JetStream KV, and the sandbox's fake of the
ChatGPT web backend (services/sandbox/chatgpt/, faithful to the fact sheet, sharing no code with
the worker). What the fake saw (`/_sandbox/chatgpt/requests`, `/stats`) is how the tests judge the
worker: which account ran a turn, what messages it sent, how many turns ran at once per account.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
import pytest_asyncio

from libs.devproc import REPO_ROOT, Proc, free_port, spawn_python_service
from libs.tokens import chat_usage
from tests.conftest import AUTH_KEY, TIME_SCALE, metric, service_env, start_edge

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
                          CHATGPT_BASE_URL=self.fake, CHATGPT_ACCOUNTS_FILE=str(self.accounts_file),
                          CHATGPT_AUTH_URL=self.fake + "/auth/login")
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
    edge = start_edge(stack.nats_url, stack.log_dir, name="edge-web", SY_TIMEOUT_QUEUE_WAIT="30")
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


async def test_max_tokens_ends_the_turn_there(web: Web, sdk: openai.AsyncOpenAI) -> None:
    """The web upstream knows no max_tokens: the worker stops reading (and the upstream) at it."""
    answer = await sdk.chat.completions.create(
        model="gpt-4o", max_tokens=5,
        messages=[{"role": "user", "content": "go on [sandbox tokens=40 token_delay_ms=5]"}])
    assert answer.choices[0].finish_reason == "length"
    assert answer.usage is not None and 5 <= answer.usage.completion_tokens <= 7  # the last event whole
    assert (await turns(web))[-1]["finish"] == "disconnected"  # the upstream was told to stop


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
    web.edge = start_edge(web.nats_url, web.log_dir, name="edge-web", SY_TIMEOUT_QUEUE_WAIT="30")
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


# ---- go-chatgpt-api's routes, served by the worker ----------------------------------------------


async def native(web: Web, method: str, path: str, *, token: str | None = None, **kwargs: Any) -> httpx.Response:
    headers = {"x-api-key": AUTH_KEY}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    async with httpx.AsyncClient(base_url=web.edge.url, timeout=30, headers=headers) as http:
        return await http.request(method, path, **kwargs)


def turn_body(text: str, conversation_id: str | None = None, parent: str = "") -> dict[str, Any]:
    return {"action": "next", "model": "gpt-4o", "parent_message_id": parent or str(uuid.uuid4()),
            "conversation_id": conversation_id,
            "messages": [{"id": str(uuid.uuid4()), "author": {"role": "user"},
                          "content": {"content_type": "text", "parts": [text]}}]}


def sse_events(text: str) -> list[Any]:
    return [orjson.loads(line[6:]) for line in text.splitlines()
            if line.startswith("data: ") and line != "data: [DONE]"]


async def test_the_seed_routes_run_on_the_pool_and_follow_the_conversation(web: Web) -> None:
    await wait_live(web)
    turn = await native(web, "POST", "/conversation", json=turn_body("hello from go-chatgpt-api"))
    assert turn.status_code == 200 and turn.headers["content-type"].startswith("text/event-stream")
    assert turn.text.rstrip().endswith("data: [DONE]")
    events = sse_events(turn.text)
    answer = [e for e in events if (e.get("message") or {}).get("author", {}).get("role") == "assistant"]
    assert answer and answer[-1]["message"]["end_turn"] is True  # relayed as the upstream sent them
    conversation = answer[-1]["conversation_id"]
    owner = (await turns(web))[-1]["user"]

    got = await native(web, "GET", f"/conversation/{conversation}")
    assert got.status_code == 200 and got.json()["current_node"] == answer[-1]["message"]["id"]
    listed = await native(web, "GET", "/conversations", params={"offset": 0, "limit": 5})
    assert listed.status_code == 200 and listed.json()["limit"] == 5
    title = await native(web, "POST", f"/conversation/gen_title/{conversation}",
                         json={"message_id": answer[-1]["message"]["id"]})
    assert title.status_code == 200 and title.json()["title"]
    renamed = await native(web, "PATCH", f"/conversation/{conversation}", json={"title": "renamed"})
    assert renamed.json() == {"success": True}
    feedback = await native(web, "POST", "/conversation/message_feedback", json={
        "conversation_id": conversation, "message_id": answer[-1]["message"]["id"], "rating": "thumbsUp"})
    assert feedback.status_code == 200 and feedback.json()["rating"] == "thumbsUp"
    # every call about the conversation ran on the account it lives on
    calls = [r for r in (await fake(web, "GET", "/requests"))["requests"] if conversation in r["path"]]
    assert calls and {r["user"] for r in calls} == {owner}
    hidden = await native(web, "PATCH", f"/conversation/{conversation}", json={"is_visible": False})
    assert hidden.status_code == 200
    gone = await native(web, "GET", f"/conversation/{conversation}")
    assert gone.status_code == 404 and "Can't load conversation" in gone.json()["detail"]  # upstream's own


async def test_a_callers_own_access_token_bypasses_the_pool(web: Web) -> None:
    await wait_live(web)
    token = (await fake(web, "POST", "/tokens", json={"user": "dave"}))["access_token"]
    turn = await native(web, "POST", "/conversation", token=token, json=turn_body("my own account"))
    assert turn.status_code == 200
    assert (await turns(web))[-1]["user"] == "dave"
    listed = await native(web, "GET", "/conversations", token=token)
    assert listed.status_code == 200 and listed.json()["total"] == 1
    hidden = await native(web, "PATCH", "/conversations", token=token, json={"is_visible": False})
    assert hidden.status_code == 200 and hidden.json() == {"success": True}
    assert (await native(web, "GET", "/conversations", token=token)).json()["total"] == 0
    expired = (await fake(web, "POST", "/tokens", json={"user": "dave", "ttl": 0}))["access_token"]
    refused = await native(web, "GET", "/conversations", token=expired)
    assert refused.status_code == 401 and refused.json()["detail"]["code"] == "token_expired"


async def test_login_exchanges_credentials_for_a_token_that_then_works(web: Web) -> None:
    await wait_live(web)
    login = await native(web, "POST", "/auth/login",
                         json={"username": "erin@sandbox.invalid", "password": "sandbox-password"})
    assert login.status_code == 200, login.text
    token = login.json()["accessToken"]
    listed = await native(web, "GET", "/conversations", token=token)
    assert listed.status_code == 200 and listed.json()["items"] == []  # erin's own, empty list
    refused = await native(web, "POST", "/auth/login",
                           json={"username": "erin@sandbox.invalid", "password": "hunter2-pw"})
    assert refused.status_code == 401 and refused.json() == {"errorMessage": "wrong email or password"}


# ---- the pool under load and faults ----------------------------------------------------------------


async def pool_metric(web: Web, state: str) -> float:
    async with httpx.AsyncClient() as http:
        text = (await http.get(web.workers[0].url + "/metrics")).text
    return metric(text, "switchyard_pool_accounts", pool=POOL, state=state)


async def test_more_requests_than_accounts_all_succeed_one_turn_per_account(
    web: Web, sdk: openai.AsyncOpenAI,
) -> None:
    await fake(web, "POST", "/reset")
    asks = [sdk.chat.completions.create(model="gpt-4o", messages=[
        {"role": "user", "content": f"busy {i} [sandbox tokens=4 token_delay_ms=25]"}]) for i in range(12)]
    answers = await asyncio.gather(*asks)
    assert all(a.choices[0].message.content for a in answers)
    stats = (await fake(web, "GET", "/stats"))["stats"]
    assert {u: stats[u]["max_concurrent"] for u in USERS} == dict.fromkeys(USERS, 1)  # never two turns at once
    assert sum(stats[u]["turns"] for u in USERS) == 12 and all(stats[u]["turns"] >= 2 for u in USERS)


async def test_a_model_cap_cools_the_account_for_that_model_and_the_request_moves_on(
    web: Web, sdk: openai.AsyncOpenAI,
) -> None:
    for user in ("alice", "bob"):
        await fake(web, "POST", "/faults", json={"user": user, "fault": "model_cap", "model": "gpt-4o-mini",
                                                 "clears_in": 3})
    before = len((await fake(web, "GET", "/requests"))["requests"])
    for _ in range(3):  # each lands on carol once alice and bob have said their cap
        answer = await sdk.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}])
        assert answer.choices[0].message.content
    seen = [r for r in (await fake(web, "GET", "/requests"))["requests"][before:]
            if r["path"].endswith("/conversation")]
    assert [r["user"] for r in seen if r["status"] == 200] == ["carol"] * 3
    assert sorted(r["user"] for r in seen if r["status"] == 429) == ["alice", "bob"]


async def test_an_expired_token_is_refreshed_from_the_session_once(web: Web, sdk: openai.AsyncOpenAI) -> None:
    sessions = {u: s["session_calls"] for u, s in (await fake(web, "GET", "/stats"))["stats"].items()}
    for user in USERS:
        await fake(web, "POST", "/faults", json={"user": user, "fault": "token_expired"})
    refreshed: set[str] = set()
    for _ in range(9):  # bounded: which account answers is the pool's choice; every one must meet its fault
        await sdk.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "still there?"}])
        stats = (await fake(web, "GET", "/stats"))["stats"]
        refreshed = {u for u in USERS if stats.get(u, {}).get("session_calls", 0) >= sessions.get(u, 0) + 1}
        if refreshed == set(USERS):
            break
    assert refreshed == set(USERS)  # each expired token was minted again from the session cookie
    assert await pool_metric(web, "quarantined") == 0


async def test_cloudflare_pages_cool_every_account_and_the_request_waits_for_the_first_back(
    web: Web, sdk: openai.AsyncOpenAI,
) -> None:
    for user in USERS:
        await fake(web, "POST", "/faults", json={"user": user, "fault": "cloudflare"})
    before = len((await fake(web, "GET", "/requests"))["requests"])
    cooling = asyncio.create_task(_eventually_cooling(web))
    answer = await sdk.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
    assert answer.choices[0].message.content
    assert await cooling == 3  # all three rested at once
    seen = [r for r in (await fake(web, "GET", "/requests"))["requests"][before:]
            if r["path"].endswith("/conversation")]
    challenged = [r for r in seen if r["status"] == 403]
    assert sorted(r["user"] for r in challenged) == sorted(USERS) and seen[-1]["status"] == 200
    # each cooled down (30 s, scaled) before its half-open retry
    assert seen[-1]["started"] - max(r["started"] for r in challenged) >= 30 * TIME_SCALE * 0.9


async def _eventually_cooling(web: Web) -> float:
    for _ in range(200):
        cooling = await pool_metric(web, "cooling")
        if cooling == 3:
            return cooling
        await asyncio.sleep(0.02)
    return await pool_metric(web, "cooling")


async def test_a_revoked_account_is_quarantined_and_the_request_moves_on(web: Web, sdk: openai.AsyncOpenAI) -> None:
    await fake(web, "POST", "/revoke", json={"user": "carol", "sessions": True})
    before = len((await fake(web, "GET", "/requests"))["requests"])
    # three choices at once take all three accounts: carol's turn fails (its token and its session
    # are refused) and goes on, transparently, on the first account free after it
    answer = await sdk.chat.completions.create(model="gpt-4o", n=3, messages=[{"role": "user", "content": "q"}])
    assert len(answer.choices) == 3 and all(c.message.content for c in answer.choices)
    seen = [(r["path"], r["status"]) for r in (await fake(web, "GET", "/requests"))["requests"][before:]]
    # carol's revoked token (the fake no longer knows whose it is), then its refused session, then
    # the three answers on alice and bob
    assert seen.count(("/backend-api/conversation", 401)) == 1 and ("/api/auth/session", 200) in seen
    assert seen.count(("/backend-api/conversation", 200)) == 3
    assert await pool_metric(web, "quarantined") == 1


async def test_a_conversation_whose_account_is_gone_goes_on_as_a_new_one_and_says_so(
    web: Web, sdk: openai.AsyncOpenAI,
) -> None:
    first: Any = [{"role": "user", "content": "a story about a lighthouse"}]
    one = await sdk.chat.completions.with_raw_response.create(model="gpt-4o", messages=first)
    owner = (await turns(web))[-1]["user"]
    await fake(web, "POST", "/revoke", json={"user": owner, "sessions": True})  # the account dies
    second: Any = [*first, {"role": "assistant", "content": one.parse().choices[0].message.content},
                   {"role": "user", "content": "and then?"}]
    two = await sdk.chat.completions.with_raw_response.create(model="gpt-4o", messages=second)
    assert two.headers["x-switchyard-conversation"] == "fallback"
    assert two.headers["x-switchyard-conversation-id"] != one.headers["x-switchyard-conversation-id"]
    seen = (await turns(web))[-1]
    assert seen["user"] not in (owner, None) and seen["conversation_id"] is None  # a new conversation
    assert [m["text"] for m in seen["messages"]] == [m["content"] for m in second]  # with the history
    assert await pool_metric(web, "quarantined") == 2


async def test_the_operator_lists_the_pool_and_lifts_a_quarantine_from_a_shell(web: Web) -> None:
    def tool(*args: str) -> Any:
        done = subprocess.run([sys.executable, "-m", "tools.accounts", "--pool", POOL, "--json", *args],
                              capture_output=True, text=True, timeout=30, cwd=REPO_ROOT,
                              env={**os.environ, "NATS_URL": web.nats_url})
        assert done.returncode == 0, done.stderr
        return orjson.loads(done.stdout)

    views = {v["name"]: v for v in tool()}
    assert set(views) == set(USERS)
    quarantined = [n for n, v in views.items() if v["state"] == "quarantined"]
    assert len(quarantined) == 2 and all(views[n]["reason"] for n in quarantined)
    restored = {v["name"]: v for v in tool("--restore", quarantined[0])}
    assert restored[quarantined[0]]["state"] != "quarantined"
    # no NATS there: one line saying so, no traceback, and never the URL's password
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        nowhere = f"nats://op:s3cret-pw@127.0.0.1:{closed.getsockname()[1]}"
        done = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "tools.accounts"], capture_output=True, text=True, timeout=30,
            cwd=REPO_ROOT, env={**os.environ, "NATS_URL": nowhere})
    assert done.returncode == 1 and "cannot reach NATS" in done.stderr and "Traceback" not in done.stderr
    assert "s3cret-pw" not in done.stderr


async def test_no_secret_reaches_a_log(web: Web) -> None:
    logs = "".join(p.read_text() for p in web.log_dir.glob("*.log") if p.stem in ("edge-web", "web-1", "web-2"))
    assert logs
    for secret in [f"sandbox-session-{u}" for u in USERS] + ["hunter2-pw", "eyJhbGciOiJSUzI1NiI"]:
        assert secret not in logs


async def test_accounts_own_model_lists_decide_what_each_may_run(
    private_nats: Proc, sandbox: Proc, tmp_path: Path,
) -> None:
    """CHATGPT_MODELS_FROM_ACCOUNTS: each account's `GET /backend-api/models` (its plan) limits it.
    On a NATS and edge of its own: its models would collide with the module's pool."""
    await fake_at(sandbox.url, "/models", {"user": "gina", "models": ["gpt-4o-mini"]})
    accounts = tmp_path / "accounts.toml"
    accounts.write_text("".join(f'[[accounts]]\nname = "{u}"\nsession_token = "sandbox-session-{u}"\n\n'
                                for u in ("frank", "gina")))
    edge = start_edge(private_nats.url, tmp_path, name="edge-live")
    port = free_port()
    worker = spawn_python_service(
        "live-worker", "services.chatgpt_web_worker", log_dir=tmp_path,
        env=service_env(private_nats.url, PORT=str(port), WORKER_POOL="chatgpt-live", CHATGPT_BASE_URL=sandbox.url,
                        CHATGPT_ACCOUNTS_FILE=str(accounts), CHATGPT_MODELS_FROM_ACCOUNTS="1"),
        health_url=f"http://127.0.0.1:{port}/readyz")
    try:
        async with openai.AsyncOpenAI(base_url=edge.url + "/v1", api_key=AUTH_KEY, max_retries=0) as client:
            for _ in range(200):
                if "gpt-4o" in {m.id async for m in client.models.list()}:
                    break
                await asyncio.sleep(0.05)
            before = len((await fake_at(sandbox.url, "/requests"))["requests"])
            for _ in range(3):  # least recently used would alternate, but gina may not run gpt-4o
                await client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "x"}])
            mini = await client.chat.completions.create(model="gpt-4o-mini",
                                                        messages=[{"role": "user", "content": "y"}])
        assert mini.model == "gpt-4o-mini"
        ran = [r for r in (await fake_at(sandbox.url, "/requests"))["requests"][before:]
               if r["path"] == "/backend-api/conversation"]
        assert [r["user"] for r in ran[:3]] == ["frank"] * 3
    finally:
        edge.stop()
        worker.stop()


async def fake_at(base: str, path: str, body: Any = None) -> Any:
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        response = await (http.get(f"/_sandbox/chatgpt{path}") if body is None
                          else http.post(f"/_sandbox/chatgpt{path}", json=body))
        response.raise_for_status()
        return response.json()
