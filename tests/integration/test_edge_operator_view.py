"""What an operator sees of requests the edge refuses, and what it lets through to the upstream:
401s and unknown routes counted with bounded labels, the model label on a 400, values OpenAI
added after the edge's tables forwarded (the upstream judges them), SY_TIMEOUT_CONFIRM_WINDOW=0."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import nats
import orjson
from nats.aio.msg import Msg

import proto
from tests.conftest import AUTH_KEY, Stack, metric, start_edge, wait_for_models
from tests.wiretap import Wiretap

AUTH = {"authorization": f"Bearer {AUTH_KEY}"}



def chat(text: str, **extra: object) -> dict[str, object]:
    return {"model": "sandbox-chat", "messages": [{"role": "user", "content": text}], **extra}


async def test_401s_are_counted_by_reason(stack: Stack) -> None:
    name = "switchyard_edge_auth_failures_total"
    async with httpx.AsyncClient(base_url=stack.edge_url, timeout=30) as http:
        before = (await http.get("/metrics")).text
        statuses = [
            (await http.get("/v1/models")).status_code,
            (await http.get("/v1/models", headers={"authorization": "Basic abc"})).status_code,
            (await http.get("/v1/models", headers={"authorization": "Bearer wrong-key"})).status_code,
            # a browser's POST (it carries an Origin) and an SDK's (none) go through the same middleware
            (await http.post("/v1/chat/completions", json=chat("hi"),
                             headers={"authorization": "Bearer wrong-key", "origin": "https://app.example"})
             ).status_code,
            (await http.post("/v1/chat/completions", json=chat("hi"))).status_code,
            (await http.post("/v1/completions", json={"model": "sandbox-chat", "prompt": "hi"},
                             headers={"authorization": "Bearer wrong-key"})).status_code,
            (await http.get("/v1/models", headers=AUTH)).status_code,
        ]
        after = (await http.get("/metrics")).text
    assert statuses == [401, 401, 401, 401, 401, 401, 200]
    assert metric(after, name, reason="missing") - metric(before, name, reason="missing") == 3
    assert metric(after, name, reason="invalid") - metric(before, name, reason="invalid") == 3
    assert "wrong-key" not in after


async def test_unknown_routes_and_methods_are_counted_by_method_never_by_path(stack: Stack) -> None:
    name = "switchyard_edge_unmatched_requests_total"
    path = f"/v1/scan-{uuid.uuid4().hex}"
    async with httpx.AsyncClient(base_url=stack.edge_url, headers=AUTH, timeout=30) as http:
        before = (await http.get("/metrics")).text
        missing = await http.get(path)
        posted = await http.post(path, json={})
        wrong_method = await http.delete("/v1/chat/completions")
        odd_method = await http.request("PROPFIND", path)  # WebDAV: parsed, routed nowhere
        after = (await http.get("/metrics")).text
    assert [r.status_code for r in (missing, posted, wrong_method, odd_method)] == [404, 404, 405, 404]
    assert missing.json()["error"]["code"] == "not_found"
    assert wrong_method.json()["error"]["code"] == "method_not_allowed"

    def grew(**labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert grew(method="GET", status="404") == 1
    assert grew(method="POST", status="404") == 1
    assert grew(method="DELETE", status="405") == 1
    assert grew(method="other", status="404") == 1
    assert "scan-" not in after and "PROPFIND" not in after


async def test_a_400_carries_the_model_label_when_the_model_is_known(stack: Stack) -> None:
    name = "switchyard_edge_requests_total"
    async with httpx.AsyncClient(base_url=stack.edge_url, headers=AUTH, timeout=30) as http:
        before = (await http.get("/metrics")).text
        bad_temperature = await http.post("/v1/chat/completions", json=chat("hi", temperature="hot"))
        bad_prompt = await http.post("/v1/completions", json={"model": "sandbox-chat", "prompt": 5})
        no_model = await http.post("/v1/chat/completions", json={"model": 5, "messages": []})
        after = (await http.get("/metrics")).text

    def grew(**labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert [r.status_code for r in (bad_temperature, bad_prompt, no_model)] == [400, 400, 400]
    assert bad_temperature.json()["error"]["param"] == "temperature"
    assert grew(route="chat.completions", model="sandbox-chat", status="400") == 1
    assert grew(route="completions", model="sandbox-chat", status="400") == 1
    assert grew(route="chat.completions", model="unknown", status="400") == 1  # no model to name


async def test_values_openai_added_reach_the_upstream(stack: Stack, wiretap: Wiretap) -> None:
    custom_tool = {"type": "custom", "custom": {"name": "code_exec", "format": {"type": "text"}}}
    new_fields = {
        "reasoning_effort": "xhigh",
        "tools": [custom_tool],
        "tool_choice": "auto",
        "verbosity": "low",  # not in the edge's tables at all
        "prompt_cache_key": "k-1",
    }
    bodies = {
        "xhigh": {**chat("hi [sandbox tokens=2]"), **new_fields},
        "none": chat("hi [sandbox tokens=2]", reasoning_effort="none"),
        "developer": {"model": "sandbox-chat", "messages": [
            {"role": "developer", "content": "Be brief."}, {"role": "user", "content": "hi [sandbox tokens=2]"}]},
    }
    async with httpx.AsyncClient(base_url=stack.base_url, headers=AUTH, timeout=30) as http:
        replies = {key: await http.post("/chat/completions", json=body,
                                        headers={"x-request-id": f"fwd-{key}-{uuid.uuid4().hex[:8]}"})
                   for key, body in bodies.items()}
    for key, reply in replies.items():
        assert reply.status_code == 200, (key, reply.text)
    # what the edge put on the bus for the worker to forward: the body as the client sent it
    jobs = {m["request_id"]: m for schema, m in wiretap.messages if m.get("type") == "job"}
    published = {key: jobs[reply.headers["x-request-id"]]["body"] for key, reply in replies.items()}
    assert {k: published["xhigh"].get(k) for k in new_fields} == new_fields
    assert published["none"]["reasoning_effort"] == "none"
    assert published["developer"]["messages"][0] == {"role": "developer", "content": "Be brief."}
    # forwarded, so not logged as "ignoring" (the edge logs at INFO in tests)
    edge_log = (stack.log_dir / "edge.log").read_text(errors="replace")
    rid = replies["xhigh"].headers["x-request-id"]
    assert rid in edge_log  # its access line: the log is the edge's, and was written
    assert not [line for line in edge_log.splitlines() if rid in line and "unknown fields" in line]


async def test_type_errors_still_name_their_param(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url, headers=AUTH, timeout=30) as http:
        effort = await http.post("/chat/completions", json=chat("hi", reasoning_effort=["high"]))
        part = await http.post("/chat/completions", json={"model": "sandbox-chat", "messages": [
            {"role": "user", "content": "a"}, {"role": "user", "content": [{"type": "text", "text": 5}]}]})
    assert (effort.status_code, effort.json()["error"]["param"]) == (400, "reasoning_effort")
    assert effort.json()["error"]["code"] == "invalid_type"
    assert (part.status_code, part.json()["error"]["param"]) == (400, "messages[1].content[0].text")


async def test_a_confirm_window_of_zero_confirms_every_job(stack: Stack, log_dir: Path) -> None:
    edge = start_edge(stack.nats_url, log_dir, name="edge-window-zero", SY_TIMEOUT_CONFIRM_WINDOW="0")
    nc = await nats.connect(stack.nats_url)
    acks: list[bytes] = []

    async def on_ack(msg: Msg) -> None:
        acks.append(msg.data)

    await nc.subscribe(proto.puback_wildcard("edge-window-zero"), cb=on_ack)
    try:
        await wait_for_models(Stack(stack.nats_url, edge.url, stack.sandbox_url, log_dir), {"sandbox-chat"})
        async with httpx.AsyncClient(base_url=edge.url + "/v1", headers=AUTH, timeout=30) as http:
            replies = [await http.post("/chat/completions", json=chat("quick [sandbox tokens=2]")) for _ in range(4)]
        await nc.flush()
    finally:
        await nc.close()
        edge.stop()
    assert [r.status_code for r in replies] == [200] * 4
    stored = [orjson.loads(a) for a in acks]
    assert len(stored) == 4 and not any(a.get("duplicate") for a in stored), stored  # one per job, none blind


async def test_a_value_the_upstream_refuses_comes_back_as_its_400(stack: Stack) -> None:
    # the edge checks max_tokens for its type only; the sandbox, like OpenAI, refuses a negative one
    async with httpx.AsyncClient(base_url=stack.base_url, headers=AUTH, timeout=30) as http:
        refused = await http.post("/chat/completions", json=chat("hi", max_tokens=-1))
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["code"] == "upstream_bad_request" and "max_tokens" in error["message"]
    assert error["param"] == "max_tokens"  # the upstream's own `param`, passed on
