"""Seed 002's POST /api/ask and GET /api/connections through real edges, agent-bridges and fake
agents (services/sandbox/agent); ChatGPT web as the fallback; /v1/chat/completions by model."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from libs.devproc import Proc, free_port, spawn_python_service
from tests.conftest import AUTH_KEY, service_env
from tests.integration.agent_stack import (
    ADMIN_KEY,
    AgentStack,
    agent_stack,
    ask,
    connections,
    fake_agents,
    no_agents_left,
    speaker,
)

__all__ = ["agent_stack"]  # the module's fixture

SEEN_AGENT_IDS: set[str] = set()  # every fake agent's connection id: never in a log or an answer
ANSWER_KEYS = {"id", "response_id", "conversation_id", "content", "error"}
RFC3339_NANO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z")


async def test_ask_answers_in_the_seed_shape_and_a_follow_up_goes_back_to_the_same_agent(
        agent_stack: AgentStack) -> None:
    one, two = agent_stack.edges
    # one agent on each bridge: a follow-up may be pulled by either
    async with fake_agents(agent_stack, 0, "alpha", expect=1) as alpha, \
            fake_agents(agent_stack, 1, "beta", expect=2) as beta:
        SEEN_AGENT_IDS.update(alpha.ids.values(), beta.ids.values())
        first = await ask(one, {"content": "hello"})
        assert first.status_code == 200, first.text
        answer = first.json()
        assert set(answer) == ANSWER_KEYS
        assert answer["id"] == "" and answer["error"] == ""
        who = speaker(answer)
        assert answer["content"] == f"{who} #1: hello"
        assert answer["conversation_id"] and answer["response_id"]
        parent = answer["response_id"]
        for turn in range(2, 6):  # from the other edge, bare token and Bearer: each lands on that agent
            edge = two if turn % 2 == 0 else one
            follow = await ask(edge, {"content": f"turn {turn}", "conversation_id": answer["conversation_id"],
                                      "parent_id": parent}, scheme="" if turn % 2 else "Bearer ")
            assert follow.status_code == 200, follow.text
            assert follow.json()["content"] == f"{who} #{turn}: turn {turn}"
            assert follow.json()["conversation_id"] == answer["conversation_id"]
            parent = follow.json()["response_id"]
    await no_agents_left(agent_stack)


async def test_seed_statuses_and_bodies(agent_stack: AgentStack) -> None:
    edge = agent_stack.edges[0]
    async with fake_agents(agent_stack, 0, "gamma", expect=1) as gamma:
        SEEN_AGENT_IDS.update(gamma.ids.values())
        # the README's curl -d: form content type, JSON body
        assert (await ask(edge, b'{"content": "form"}')).status_code == 200
        for bad in (b"{not json", b"[1, 2]", b'{"content": 5}'):
            response = await ask(edge, bad)
            assert (response.status_code, response.json()) == (400, {"error": "Invalid request"}), bad
        for half in ({"content": "x", "conversation_id": "c"}, {"content": "x", "parent_id": "p"}):
            response = await ask(edge, half)
            assert (response.status_code, response.json()) == (400, {"error": "Invalid request"}), half
        response = await ask(edge, {"content": "x"}, key=None)
        assert (response.status_code, response.json()) == (401, {"error": "API key not provided"})
        response = await ask(edge, {"content": "x"}, key="not-a-key")
        assert (response.status_code, response.json()) == (401, {"error": "Invalid API key"})
        for key, scheme in ((AUTH_KEY, ""), (AUTH_KEY, "Bearer "), (ADMIN_KEY, ""), (ADMIN_KEY, "Bearer ")):
            response = await ask(edge, {"content": "who"}, key=key, scheme=scheme)
            assert response.status_code == 200, (scheme, response.text)
        # a user token made by seed 002's admin route works, and stops working once deleted
        async with httpx.AsyncClient(base_url=edge.url, timeout=10) as http:
            made = (await http.post("/admin/users/add", json={"admin_key": ADMIN_KEY})).json()
            try:
                assert (await ask(edge, {"content": "user"}, key=made["token"])).status_code == 200
            finally:
                await http.post("/admin/users/delete", json={"admin_key": ADMIN_KEY, "user_id": made["user_id"]})
        unknown = await ask(edge, {"content": "x", "conversation_id": "no-such", "parent_id": "p"})
        assert (unknown.status_code, unknown.json()) == (500, {"error": "Conversation doesn't exists"})
        # an error frame: the seed's body, and the agent is idle again (the seed left it busy for ever)
        failed = await ask(edge, {"content": "[agent error=boom]"})
        assert (failed.status_code, failed.json()) == (500, {"error": "Failed to convert response to ChatGptResponse"})
        again = await ask(edge, {"content": "still here"})
        assert again.status_code == 200 and speaker(again.json()) == "gamma"
    await no_agents_left(agent_stack)


async def test_no_agent_and_no_web_worker_is_no_available_clients(agent_stack: AgentStack) -> None:
    await no_agents_left(agent_stack)
    response = await ask(agent_stack.edges[1], {"content": "anyone?"})
    assert (response.status_code, response.json()) == (503, {"error": "No available clients"})


async def test_connections_need_the_admin_key_and_show_no_secret(agent_stack: AgentStack) -> None:
    edge = agent_stack.edges[1]
    async with httpx.AsyncClient(base_url=edge.url, timeout=10) as http:
        assert (await http.get("/api/connections", params={"admin_key": ADMIN_KEY})).json() == {"connections": None}
        for headers, params in (({}, {}), ({"authorization": f"Bearer {AUTH_KEY}"}, {}), ({}, {"admin_key": "x"})):
            refused = await http.get("/api/connections", headers=headers, params=params)
            assert (refused.status_code, refused.json()) == (401, {"error": "Invalid admin key"})
        async with fake_agents(agent_stack, 0, "delta", "--count", "2", expect=2) as delta, \
                fake_agents(agent_stack, 1, "eps", expect=3) as eps:
            ids = set(delta.ids.values()) | set(eps.ids.values())
            SEEN_AGENT_IDS.update(ids)
            assert (await ask(edge, {"content": "use one"})).status_code == 200
            listed = await connections(edge)
            raw = (await http.get("/api/connections", params={"admin_key": ADMIN_KEY})).text
    assert len(listed) == 3
    for entry in listed:
        assert set(entry) == {"Ws", "Id", "Heartbeat", "LastMessageTime", "bridge", "state"}
        assert entry["Ws"] == {} and entry["state"] == "idle"
        assert RFC3339_NANO.fullmatch(entry["Heartbeat"])
        assert entry["LastMessageTime"] == "0001-01-01T00:00:00Z" or RFC3339_NANO.fullmatch(entry["LastMessageTime"])
    assert sorted(e["bridge"] for e in listed) == ["bridge-a", "bridge-a", "bridge-b"]
    assert sum(e["LastMessageTime"] != "0001-01-01T00:00:00Z" for e in listed) == 1
    assert len(ids) == 3 and not any(agent_id in raw for agent_id in ids)  # the reclaim credential
    await no_agents_left(agent_stack)


async def test_chat_completions_reach_the_agents_by_model(agent_stack: AgentStack) -> None:
    edge = agent_stack.edges[0]
    async with fake_agents(agent_stack, 1, "zeta", expect=1) as zeta:
        SEEN_AGENT_IDS.update(zeta.ids.values())
        async with openai.AsyncOpenAI(base_url=edge.url + "/v1", api_key=AUTH_KEY, max_retries=0, timeout=30) as sdk:
            whole = await sdk.chat.completions.create(
                model="chatgpt-agent", messages=[{"role": "user", "content": "one message"}])
            assert whole.choices[0].message.content == "zeta #1: one message"
            assert whole.choices[0].finish_reason == "stop"
            stream = await sdk.chat.completions.create(
                model="chatgpt-agent", stream=True,
                messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "two"}])
            pieces = [c.choices[0].delta.content async for c in stream if c.choices and c.choices[0].delta.content]
    # one content chunk: the agent's whole answer; the transcript was folded into one prompt
    assert pieces == ["zeta #1: System: be brief\n\nUser: two"]
    await no_agents_left(agent_stack)


async def test_both_routes_are_in_the_openapi_document(agent_stack: AgentStack) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        paths = (await http.get(agent_stack.edges[0].url + "/openapi.json")).json()["paths"]
    assert "post" in paths["/api/ask"] and "get" in paths["/api/connections"]


# ---- ChatGPT web as the fallback -----------------------------------------------------------------


@pytest.fixture
def web_worker(agent_stack: AgentStack, sandbox: Proc, tmp_path: Path) -> Iterator[Proc]:
    accounts = tmp_path / "accounts.toml"
    accounts.write_text('[[accounts]]\nname = "askweb"\nsession_token = "sandbox-session-askweb"\n')
    httpx.post(sandbox.url + "/_sandbox/chatgpt/reset").raise_for_status()
    port = free_port()
    # a pool of its own: its account's state stays in the shared KV bucket, out of chatgpt-web's pool
    env = service_env(agent_stack.nats_url, PORT=str(port), WORKER_POOL="chatgpt-web-ask", WORKER_ID="web-ask",
                      CHATGPT_BASE_URL=sandbox.url, CHATGPT_ACCOUNTS_FILE=str(accounts),
                      CHATGPT_AUTH_URL=sandbox.url + "/auth/login")
    proc = spawn_python_service("web-ask", "services.chatgpt_web_worker", env=env, log_dir=agent_stack.log_dir,
                                health_url=f"http://127.0.0.1:{port}/readyz")
    yield proc
    proc.stop()


async def test_without_agents_a_chatgpt_web_worker_answers(agent_stack: AgentStack, web_worker: Proc) -> None:
    await no_agents_left_but_web(agent_stack)
    response = await ask(agent_stack.edges[0], {"content": "hello web"})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    assert set(answer) == ANSWER_KEYS
    assert answer["content"] and answer["conversation_id"] and answer["response_id"] and answer["error"] == ""
    follow = await ask(agent_stack.edges[1], {"content": "and again", "conversation_id": answer["conversation_id"],
                                              "parent_id": answer["response_id"]})
    assert follow.status_code == 200, follow.text
    assert follow.json()["conversation_id"] == answer["conversation_id"]


async def no_agents_left_but_web(stack: AgentStack) -> None:
    """No agent connected, and every edge has heard of the web worker (its models are live)."""
    import asyncio

    loop = asyncio.get_running_loop()
    until = loop.time() + 15
    async with httpx.AsyncClient(headers={"authorization": f"Bearer {AUTH_KEY}"}) as http:
        for edge in stack.edges:
            while not any(m["owned_by"] == "chatgpt-web-ask"
                          for m in (await http.get(edge.url + "/v1/models")).json()["data"]):
                assert loop.time() < until, "the web worker never became live"
                await asyncio.sleep(0.05)


# ---- last: nothing secret in any captured log ----------------------------------------------------


def test_zz_no_secret_in_the_logs(agent_stack: AgentStack) -> None:
    assert SEEN_AGENT_IDS, "the tests above ran no agent"
    for proc in [*agent_stack.edges, *agent_stack.bridges]:
        log = proc.log()
        for secret in (AUTH_KEY, ADMIN_KEY, *SEEN_AGENT_IDS):
            assert secret not in log, (proc.name, "a secret in the log")


async def test_a_keys_rate_limit_on_ask_keeps_the_seed_body_and_says_when_to_retry(agent_stack: AgentStack) -> None:
    """A managed key's rpm holds on /api/ask as on every route: the 429 in the seed's body shape,
    with Retry-After and the x-ratelimit headers."""
    one, two = agent_stack.edges
    admin = {"authorization": f"Bearer {ADMIN_KEY}"}
    async with httpx.AsyncClient(base_url=one.url, timeout=30) as http:
        made = (await http.post("/admin/keys", json={"name": "ask-rpm", "rpm": 1}, headers=admin)).json()
    try:
        async with fake_agents(agent_stack, 0, "gamma", expect=1):
            first = await ask(one, {"content": "once"}, key=made["key"])
            assert first.status_code == 200, first.text
            assert first.headers["x-ratelimit-limit-requests"] == "1"
            second = await ask(two, {"content": "twice"}, key=made["key"], scheme="Bearer ")
            assert second.status_code == 429, second.text
            assert set(second.json()) == {"error"} and "Rate limit" in second.json()["error"]
            assert int(second.headers["retry-after"]) >= 1 and second.headers["x-ratelimit-remaining-requests"] == "0"
            assert made["key"] not in second.text
    finally:
        async with httpx.AsyncClient(base_url=one.url, timeout=30) as http:
            await http.delete(f"/admin/keys/{made['id']}", headers=admin)
    await no_agents_left(agent_stack)
