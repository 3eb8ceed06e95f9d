"""The sandbox's ChatGPT web fake (services/sandbox/chatgpt/), driven as a real subprocess with httpx.

Checked against the fact sheet (/work/shared/upstreams/chatgpt-web.md §1.2, §1.3, §2, §3, §8): the
exact stream, the tree, the management shapes, auth, sessions, every fault body and the one-turn rule.
Each test uses its own user, so tests do not see each other's conversations, faults or stats.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import orjson
import pytest

from libs.devproc import Proc, free_port, spawn_python_service
from services.sandbox.generate import seed_of, tokens

TTL = 1234  # SANDBOX_CHATGPT_TOKEN_TTL of the fake under test
CONVERSATION = "/backend-api/conversation"
COOKIE = "__Secure-next-auth.session-token"
JWT_PREFIX = "eyJhbGciOiJSUzI1NiI"
TOKEN_EXPIRED = {"detail": {
    "message": "Your authentication token has expired. Please try signing in again.",
    "type": "invalid_request_error", "param": None, "code": "token_expired",
}}  # fmt: skip
ONE_AT_A_TIME = ("Only one message at a time. Please allow any other responses to complete before sending another "
                 "message, or wait one minute.")


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    port = free_port()
    proc = spawn_python_service(
        "sandbox-chatgpt",
        "services.sandbox",
        env={"PORT": str(port), "SANDBOX_CHATGPT_TOKEN_TTL": str(TTL)},
        log_dir=tmp_path_factory.mktemp("sandbox-chatgpt-logs"),
        health_url=f"http://127.0.0.1:{port}/healthz",
    )
    try:
        yield proc
    finally:
        proc.stop()
    log = proc.log()
    assert "Traceback" not in log and "Exception in ASGI" not in log, log


@pytest.fixture
async def http(fake: Proc) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=fake.url, timeout=10.0) as client:
        yield client


# ---- helpers ------------------------------------------------------------------------------------


def new_user() -> str:
    return "u" + uuid.uuid4().hex[:10]


async def control(http: httpx.AsyncClient, name: str, body: dict[str, Any]) -> Any:
    r = await http.post(f"/_sandbox/chatgpt/{name}", json=body)
    assert r.status_code == 200, r.text
    return r.json()


async def token_of(http: httpx.AsyncClient, user: str, **extra: Any) -> dict[str, str]:
    minted = await control(http, "tokens", {"user": user, **extra})
    return {"Authorization": f"Bearer {minted['access_token']}"}


def message(text: str, role: str = "user", legacy: bool = False) -> dict[str, Any]:
    m: dict[str, Any] = {"id": str(uuid.uuid4()), "content": {"content_type": "text", "parts": [text]}, "metadata": {}}
    if legacy:
        m["role"] = role  # only the legacy field, as the Dec 2022 browser agents sent
    else:
        m["author"] = {"role": role}
        m["role"] = role
    return m


def turn(text: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"action": "next", "messages": [message(text)], "parent_message_id": str(uuid.uuid4()),
                            "model": "auto", "timezone_offset_min": -480, "history_and_training_disabled": False}
    body.update(extra)
    return body


def words(text: str, count: int = 16, choice: int = 0) -> list[str]:
    return [w.strip() for w in tokens(seed_of(text), choice, count)]


def sse_blocks(raw: str) -> list[dict[str, str]]:
    """A tiny SSE reader: blocks split on blank lines (\\n or \\r\\n), each {field: value}."""
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in raw.replace("\r\n", "\n").split("\n"):
        if not line:
            if current:
                blocks.append(current)
                current = {}
            continue
        name, _, value = line.partition(": ")
        current[name] = value
    assert not current, "the stream must end with a blank line"
    return blocks


def json_events(raw: str) -> list[dict[str, Any]]:
    """The `data:` payloads that are JSON objects, in order ([DONE], pings and noise skipped)."""
    out = []
    for block in sse_blocks(raw):
        data = block.get("data", "")
        if "event" in block or data == "[DONE]":
            continue
        try:
            out.append(orjson.loads(data))
        except orjson.JSONDecodeError:
            continue
    return out


def assistant(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e["message"] for e in events if e.get("message") and e["message"]["author"]["role"] == "assistant"]


async def converse(http: httpx.AsyncClient, auth: dict[str, str], body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """One whole turn: the raw stream and its final assistant message (with conversation_id)."""
    r = await http.post(CONVERSATION, json=body, headers=auth)
    assert r.status_code == 200, r.text
    events = json_events(r.text)
    final = assistant(events)[-1]
    assert final["end_turn"] is True, final
    return r.text, {**final, "conversation_id": events[-1]["conversation_id"]}


# ---- the stream -----------------------------------------------------------------------------------


async def test_stream_has_the_sheets_event_sequence_with_its_noise(http: httpx.AsyncClient) -> None:
    auth = await token_of(http, new_user())
    body = turn("Hello there [sandbox tokens=5]")
    r = await http.post(CONVERSATION, json=body, headers={**auth, "Accept": "text/event-stream"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    raw = r.text
    assert "\r\n" in raw and raw.endswith("data: [DONE]\n\n")
    blocks = sse_blocks(raw)

    user_echo = orjson.loads(blocks[0]["data"])
    cid = user_echo["conversation_id"]
    assert user_echo["message"]["id"] == body["messages"][0]["id"]
    assert user_echo["message"]["author"]["role"] == "user" and user_echo["error"] is None
    assert blocks[1]["event"] == "ping" and blocks[1]["data"].startswith("20")

    expected = words("Hello there", 5)
    texts = []
    noise = 0
    for block in blocks[2:-4]:
        try:
            event = orjson.loads(block["data"])
        except orjson.JSONDecodeError:
            noise += 1
            continue
        msg = event["message"]
        assert event["conversation_id"] == cid and event["error"] is None
        assert msg["status"] == "in_progress" and msg["end_turn"] is None
        assert msg["metadata"]["message_type"] == "next" and msg["metadata"]["model_slug"] == "gpt-4o"
        texts.append(msg["content"]["parts"][0])
    assert noise == 1
    assert texts == [" ".join(expected[:i]) for i in range(6)]  # "" first, then one word more each

    final = orjson.loads(blocks[-4]["data"])["message"]
    assert final["content"]["parts"] == [" ".join(expected)]
    assert final["status"] == "finished_successfully" and final["end_turn"] is True
    assert final["metadata"]["finish_details"]["type"] == "stop"
    moderation = orjson.loads(blocks[-3]["data"])
    assert moderation["type"] == "moderation" and moderation["conversation_id"] == cid
    assert moderation["message_id"] == final["id"] and moderation["is_completion"] is True
    assert set(moderation["moderation_response"]) >= {"flagged", "blocked"}
    title = orjson.loads(blocks[-2]["data"])
    assert title == {"type": "title_generation", "title": "Hello there", "conversation_id": cid}
    assert blocks[-1] == {"data": "[DONE]"}


async def test_follow_up_multi_message_and_legacy_role_build_the_tree(http: httpx.AsyncClient) -> None:
    auth = await token_of(http, new_user())
    first = turn("first question", model="gpt-4o-mini")
    first["messages"].insert(0, message("be brief", role="system"))
    _, a1 = await converse(http, auth, first)
    cid = a1["conversation_id"]
    assert a1["metadata"]["model_slug"] == "gpt-4o-mini"
    follow = turn("second question", conversation_id=cid, parent_message_id=a1["id"])
    follow["messages"] = [message("second question", legacy=True)]
    raw, a2 = await converse(http, auth, follow)
    assert "title_generation" not in raw  # only a new conversation gets a title event
    assert a2["content"]["parts"] == [" ".join(words("second question"))]

    r = await http.get(f"{CONVERSATION}/{cid}", headers=auth)
    assert r.status_code == 200
    tree = r.json()
    assert tree["conversation_id"] == cid and tree["current_node"] == a2["id"]
    assert isinstance(tree["create_time"], float) and tree["update_time"] >= tree["create_time"]
    mapping = tree["mapping"]
    # walk current_node up to the root: the visible transcript
    chain, node = [], tree["current_node"]
    while node is not None:
        chain.append(node)
        node = mapping[node]["parent"]
    chain.reverse()
    root, sys_id, u1, asst1, u2, asst2 = chain
    assert root == first["parent_message_id"] and mapping[root]["message"] is None
    assert (sys_id, u1) == (first["messages"][0]["id"], first["messages"][1]["id"])
    assert mapping[sys_id]["message"]["author"]["role"] == "system"
    assert (asst1, u2, asst2) == (a1["id"], follow["messages"][0]["id"], a2["id"])
    assert mapping[u2]["message"]["author"]["role"] == "user"
    assert mapping[asst1]["children"] == [u2]
    assert mapping[asst2]["message"]["metadata"]["finish_details"]["type"] == "stop"


async def test_variant_adds_a_different_sibling_under_the_same_user_message(http: httpx.AsyncClient) -> None:
    auth = await token_of(http, new_user())
    first = turn("regenerate me")
    _, a1 = await converse(http, auth, first)
    cid = a1["conversation_id"]
    variant = {"action": "variant", "conversation_id": cid, "parent_message_id": first["parent_message_id"],
               "messages": [first["messages"][0]], "model": "auto"}
    raw, a2 = await converse(http, auth, variant)
    assert a2["id"] != a1["id"] and a2["metadata"]["message_type"] == "variant"
    assert a2["content"]["parts"] == [" ".join(words("regenerate me", choice=1))] != a1["content"]["parts"]
    assert orjson.loads(sse_blocks(raw)[0]["data"])["message"]["id"] == first["messages"][0]["id"]
    tree = (await http.get(f"{CONVERSATION}/{cid}", headers=auth)).json()
    assert tree["mapping"][first["messages"][0]["id"]]["children"] == [a1["id"], a2["id"]]
    assert tree["current_node"] == a2["id"]


async def test_continue_after_max_tokens_finishes_the_answer(http: httpx.AsyncClient) -> None:
    auth = await token_of(http, new_user())
    _, cut = await converse(http, auth, turn("a long story [sandbox tokens=8 max_tokens_at=3]"))
    full = words("a long story", 8)
    assert cut["content"]["parts"] == [" ".join(full[:3])]
    assert cut["metadata"]["finish_details"] == {"type": "max_tokens"}
    cid = cut["conversation_id"]
    body = {"action": "continue", "conversation_id": cid, "parent_message_id": cut["id"], "model": "auto",
            "history_and_training_disabled": False, "timezone_offset_min": -480}
    raw, rest = await converse(http, auth, body)
    assert rest["id"] != cut["id"] and rest["metadata"]["message_type"] == "continue"
    assert rest["metadata"]["finish_details"]["type"] == "stop"
    assert cut["content"]["parts"][0] + rest["content"]["parts"][0] == " ".join(full)
    pieces = [m["content"]["parts"][0] for m in assistant(json_events(raw))]
    assert pieces[1] == " " + full[3]  # cumulative from the continuation's own start
    tree = (await http.get(f"{CONVERSATION}/{cid}", headers=auth)).json()
    assert tree["mapping"][cut["id"]]["children"] == [rest["id"]] and tree["current_node"] == rest["id"]
    # nothing is cut any more: continuing the finished continuation is a bad request
    again = await http.post(CONVERSATION, headers=auth, json={**body, "parent_message_id": rest["id"]})
    assert again.status_code == 400 and isinstance(again.json()["detail"], str)


# ---- management endpoints ------------------------------------------------------------------------------


async def test_list_get_patch_hide_and_hide_all(http: httpx.AsyncClient) -> None:
    auth = await token_of(http, new_user())
    cids = []
    for text in ("one apple", "two bananas", "three cherries"):
        _, final = await converse(http, auth, turn(text + " [sandbox tokens=2]"))
        cids.append(final["conversation_id"])
    listing = (await http.get("/backend-api/conversations?offset=0&limit=2&order=updated", headers=auth)).json()
    assert set(listing) == {"items", "total", "limit", "offset", "has_missing_conversations"}
    assert (listing["total"], listing["limit"], listing["offset"]) == (3, 2, 0)
    assert listing["has_missing_conversations"] is False
    assert [item["id"] for item in listing["items"]] == [cids[2], cids[1]]  # newest first
    item = listing["items"][0]
    assert item["title"] == "three cherries" and item["mapping"] is None and item["current_node"] is None
    assert item["create_time"].endswith("+00:00") and "T" in item["create_time"]
    page2 = (await http.get("/backend-api/conversations?offset=2&limit=2", headers=auth)).json()
    assert [i["id"] for i in page2["items"]] == [cids[0]]

    r = await http.patch(f"{CONVERSATION}/{cids[0]}", json={"title": "Renamed"}, headers=auth)
    assert r.json() == {"success": True}
    assert (await http.get(f"{CONVERSATION}/{cids[0]}", headers=auth)).json()["title"] == "Renamed"

    assert (await http.patch(f"{CONVERSATION}/{cids[1]}", json={"is_visible": False}, headers=auth)).json() == {
        "success": True}
    gone = await http.get(f"{CONVERSATION}/{cids[1]}", headers=auth)
    assert gone.status_code == 404 and gone.json() == {"detail": f"Can't load conversation {cids[1]}"}
    revived = await http.patch(f"{CONVERSATION}/{cids[1]}", json={"is_visible": True}, headers=auth)
    assert revived.json() == {"success": True}
    assert (await http.get(f"{CONVERSATION}/{cids[1]}", headers=auth)).status_code == 404
    follow = turn("more", conversation_id=cids[1])
    r = await http.post(CONVERSATION, json=follow, headers=auth)
    assert r.status_code == 404 and r.json() == {"detail": "Conversation not found"}

    archived = await http.patch(f"{CONVERSATION}/{cids[2]}", json={"is_archived": True}, headers=auth)
    assert archived.json() == {"success": True}
    listing = (await http.get("/backend-api/conversations", headers=auth)).json()
    assert [i["id"] for i in listing["items"]] == [cids[0]] and listing["total"] == 1
    archived_list = (await http.get("/backend-api/conversations?is_archived=true", headers=auth)).json()
    assert [(i["id"], i["is_archived"]) for i in archived_list["items"]] == [(cids[2], True)]

    assert (await http.patch("/backend-api/conversations", json={"is_visible": False}, headers=auth)).json() == {
        "success": True}
    listing = (await http.get("/backend-api/conversations", headers=auth)).json()
    assert listing["items"] == [] and listing["total"] == 0
    bad = await http.patch(f"{CONVERSATION}/{cids[0]}", json={"title": 5}, headers=auth)
    assert bad.status_code == 400 and isinstance(bad.json()["detail"], str)
    unknown = await http.patch(f"{CONVERSATION}/{uuid.uuid4()}", json={"title": "x"}, headers=auth)
    assert unknown.status_code == 404


async def test_gen_title_feedback_models_and_requirements(http: httpx.AsyncClient) -> None:
    user = new_user()
    auth = await token_of(http, user)
    _, final = await converse(http, auth, turn("Tell me about the sea today [sandbox tokens=2]"))
    cid = final["conversation_id"]
    r = await http.post(f"{CONVERSATION}/gen_title/{cid}", json={"message_id": final["id"]}, headers=auth)
    assert r.status_code == 200 and r.json() == {"title": "Tell me about the"}

    fb = {"conversation_id": cid, "message_id": final["id"], "rating": "thumbsUp"}
    r = await http.post(f"{CONVERSATION}/message_feedback", json=fb, headers=auth)
    assert r.json() == {**fb, "user_id": f"user-{user}", "content": "{}"}
    r = await http.post(f"{CONVERSATION}/message_feedback", headers=auth,
                        json={**fb, "rating": "thumbsDown", "text": "meh", "tags": ["not-helpful"]})
    body = r.json()
    assert body["rating"] == "thumbsDown" and isinstance(body["content"], str)
    assert orjson.loads(body["content"]) == {"text": "meh", "tags": ["not-helpful"]}

    models = (await http.get("/backend-api/models?history_and_training_disabled=false", headers=auth)).json()
    slugs = [m["slug"] for m in models["models"]]
    assert slugs == ["auto", "gpt-4o", "gpt-4o-mini", "o1", "text-davinci-002-render-sha"]
    assert set(models["models"][0]) >= {"slug", "max_tokens", "title", "description", "tags"}
    assert models["categories"] and {"category", "default_model"} <= set(models["categories"][0])
    await control(http, "models", {"user": user, "models": ["gpt-4o-mini"]})
    models = (await http.get("/backend-api/models", headers=auth)).json()
    assert [m["slug"] for m in models["models"]] == ["gpt-4o-mini"]
    refused = await http.post(CONVERSATION, json=turn("hi", model="gpt-4o"), headers=auth)
    assert refused.status_code == 404 and refused.json()["detail"]["code"] == "model_not_found"

    req = await http.post("/backend-api/sentinel/chat-requirements", json={"p": "gAAAAAC..."}, headers=auth)
    body = req.json()
    assert body["token"] and all(body[k]["required"] is False for k in ("proofofwork", "turnstile", "arkose"))


# ---- auth and sessions -----------------------------------------------------------------------------------


async def test_auth_failures(http: httpx.AsyncClient) -> None:
    user = new_user()
    auth = await token_of(http, user)
    token = auth["Authorization"].removeprefix("Bearer ")
    assert token.startswith(JWT_PREFIX) and token.count(".") == 2
    payload = orjson.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert payload["https://api.openai.com/profile"]["email"] == f"{user}@sandbox.invalid"
    assert payload["https://api.openai.com/auth"]["user_id"] == f"user-{user}"
    assert {"iat", "exp", "iss", "aud"} <= set(payload)

    missing = await http.get("/backend-api/conversations")
    assert missing.status_code == 401 and isinstance(missing.json()["detail"], str)
    # a forged token: our header and a payload claiming the user, signed with anything else
    head, body, sig = token.split(".")
    forged_auth = {"Authorization": f"Bearer {head}.{body}.{sig[::-1]}"}
    forged = await http.get("/backend-api/conversations", headers=forged_auth)
    assert forged.status_code == 401 and isinstance(forged.json()["detail"], str)
    assert (await http.get("/backend-api/models", headers={"Authorization": "Bearer sk-nope"})).status_code == 401

    expired = await token_of(http, user, ttl=-1)
    r = await http.post(CONVERSATION, json=turn("hi"), headers=expired)
    assert r.status_code == 401 and r.json() == TOKEN_EXPIRED

    _, final = await converse(http, auth, turn("mine [sandbox tokens=1]"))
    cid = final["conversation_id"]
    other = await token_of(http, new_user())
    r = await http.get(f"{CONVERSATION}/{cid}", headers=other)
    assert r.status_code == 404 and r.json() == {"detail": f"Can't load conversation {cid}"}
    r = await http.post(CONVERSATION, json=turn("hi", conversation_id=cid, parent_message_id=final["id"]),
                        headers=other)
    assert r.status_code == 404 and r.json() == {"detail": "Conversation not found"}

    assert (await control(http, "revoke", {"user": user}))["revoked"] >= 1
    r = await http.get("/backend-api/models", headers=auth)
    assert r.status_code == 401 and r.json() == TOKEN_EXPIRED
    fresh = await token_of(http, user)
    assert (await http.get(f"{CONVERSATION}/{cid}", headers=fresh)).status_code == 200


async def session(http: httpx.AsyncClient, value: str | None) -> httpx.Response:
    http.cookies.clear()
    headers = {"Cookie": f"{COOKIE}={value}"} if value is not None else {}
    return await http.get("/api/auth/session", headers=headers)


async def test_session_cookie_gives_a_fresh_token(http: httpx.AsyncClient) -> None:
    user = new_user()
    r = await session(http, f"sandbox-session-{user}")
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"user", "expires", "accessToken", "authProvider"}
    assert body["user"]["id"] == f"user-{user}" and body["user"]["email"] == f"{user}@sandbox.invalid"
    assert body["expires"].endswith("Z")
    token = body["accessToken"]
    assert token.startswith(JWT_PREFIX)
    claims = orjson.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert claims["exp"] - claims["iat"] == TTL and abs(claims["iat"] - time.time()) < 5
    _, final = await converse(http, {"Authorization": f"Bearer {token}"}, turn("via session [sandbox tokens=1]"))
    assert final["content"]["parts"] == [words("via session", 1)[0]]

    for value in ("nobody-knows-this", None):
        r = await session(http, value)
        assert r.status_code == 200 and r.json() == {}

    registered = (await control(http, "sessions", {"user": user}))["session_token"]
    assert not registered.startswith(("sandbox-session-", "sk-", "eyJ"))
    r = await session(http, registered)
    assert r.json()["user"]["id"] == f"user-{user}" and "set-cookie" not in r.headers
    stats = (await http.get("/_sandbox/chatgpt/stats")).json()["stats"][user]
    assert stats["session_calls"] == 2 and stats["turns"] == 1

    await control(http, "revoke", {"user": user, "sessions": True})
    assert (await session(http, registered)).json() == {}
    assert (await session(http, f"sandbox-session-{user}")).json() == {}


async def test_session_rotation_keeps_the_old_value_for_one_more_use(http: httpx.AsyncClient) -> None:
    user = new_user()
    old = (await control(http, "sessions", {"user": user, "rotate": True}))["session_token"]
    r = await session(http, old)
    assert r.json()["user"]["id"] == f"user-{user}"
    new = r.cookies.get(COOKIE)
    assert new and new != old and r.headers["set-cookie"].startswith(f"{COOKIE}={new};")
    assert (await session(http, old)).json()["user"]["id"] == f"user-{user}"  # the one more use
    assert (await session(http, old)).json() == {}
    assert (await session(http, new)).json()["user"]["id"] == f"user-{user}"
    # a client's own cookie jar keeps and sends the rotated value (no `Secure` over plain HTTP)
    async with httpx.AsyncClient(base_url=http.base_url) as jar:
        jar.cookies.set(COOKIE, new, domain=http.base_url.host)
        first = await jar.get("/api/auth/session")
        assert first.json()["user"]["id"] == f"user-{user}"
        assert jar.cookies.get(COOKIE) not in (None, new)
        rotated_again = await jar.get("/api/auth/session")
        assert rotated_again.json()["user"]["id"] == f"user-{user}" and "set-cookie" in rotated_again.headers


# ---- faults ----------------------------------------------------------------------------------------


FAULTS: list[tuple[str, int, Any]] = [
    ("rate_limit", 429, {"detail": "Too many requests in 1 hour. Try again later."}),
    ("model_cap", 429, {"detail": {"message": "You have sent too many messages to the model. Please try again later.",
                                   "code": "model_cap_exceeded", "clears_in": 77}}),
    ("token_expired", 401, TOKEN_EXPIRED),
    ("not_found", 404, {"detail": "Conversation not found"}),
    ("too_long", 413, {"detail": {"message": "The message you submitted was too long, please reload the "
                                             "conversation and submit something shorter.",
                                  "code": "message_length_exceeds_limit"}}),
]


@pytest.mark.parametrize(("kind", "status", "expected"), FAULTS, ids=[f[0] for f in FAULTS])
async def test_json_faults_hit_the_next_k_requests(http: httpx.AsyncClient, kind: str, status: int,
                                                   expected: Any) -> None:
    user = new_user()
    auth = await token_of(http, user)
    await control(http, "faults", {"user": user, "fault": kind, "times": 2, "clears_in": 77})
    for _ in range(2):
        r = await http.post(CONVERSATION, json=turn("hi [sandbox tokens=1]"), headers=auth)
        assert (r.status_code, r.json()) == (status, expected)
        assert r.headers["content-type"].startswith("application/json")
    await converse(http, auth, turn("hi [sandbox tokens=1]"))  # used up: the third passes
    assert (await http.get("/_sandbox/chatgpt/faults")).json()["faults"].get(user) is None


async def test_cloudflare_and_server_error_faults(http: httpx.AsyncClient) -> None:
    user = new_user()
    auth = await token_of(http, user)
    await control(http, "faults", {"user": user, "fault": "cloudflare"})
    r = await http.post(CONVERSATION, json=turn("hi"), headers=auth)
    assert r.status_code == 403 and r.headers["content-type"].startswith("text/html")
    assert "Just a moment..." in r.text and "cf-please-wait" in r.text
    await control(http, "faults", {"user": user, "fault": "server_error"})
    r = await http.post(CONVERSATION, json=turn("hi"), headers=auth)
    assert r.status_code == 500 and r.text == "Internal Server Error"
    assert r.headers["content-type"].startswith("text/plain")


async def test_in_stream_error_fault_and_error_after(http: httpx.AsyncClient) -> None:
    user = new_user()
    auth = await token_of(http, user)
    await control(http, "faults", {"user": user, "fault": "in_stream_error"})
    for text, written in (("oops [sandbox tokens=4]", 1), ("later [sandbox tokens=4 error_after=2]", 2)):
        r = await http.post(CONVERSATION, json=turn(text), headers=auth)
        assert r.status_code == 200
        events = json_events(r.text)
        assert events[-1]["error"] == "Something went wrong, please try reloading the conversation."
        assert events[-1]["message"] is None
        assert "[DONE]" not in r.text
        texts = [m["content"]["parts"][0] for m in assistant(events)]
        assert texts[-1] == " ".join(words(text.split(" [")[0], 4)[:written])
        cid = events[-1]["conversation_id"]
        tree = (await http.get(f"{CONVERSATION}/{cid}", headers=auth)).json()
        kept = tree["mapping"][tree["current_node"]]["message"]
        assert kept["metadata"]["finish_details"] == {"type": "interrupted"}
    finishes = [rec["finish"] for rec in (await http.get("/_sandbox/chatgpt/requests")).json()["requests"]
                if rec["user"] == user and rec["path"] == CONVERSATION]
    assert finishes == ["error", "error"]


async def test_fault_filters_model_and_path(http: httpx.AsyncClient) -> None:
    user = new_user()
    auth = await token_of(http, user)
    await control(http, "faults", {"user": user, "fault": "model_cap", "model": "o1", "clears_in": 5})
    await converse(http, auth, turn("fine [sandbox tokens=1]", model="gpt-4o"))
    r = await http.post(CONVERSATION, json=turn("capped", model="o1"), headers=auth)
    assert r.status_code == 429 and r.json()["detail"]["clears_in"] == 5

    await control(http, "faults", {"user": user, "fault": "rate_limit", "path": "session"})
    await converse(http, auth, turn("not the session [sandbox tokens=1]"))
    r = await session(http, f"sandbox-session-{user}")
    assert r.status_code == 429 and r.json() == {"detail": "Too many requests in 1 hour. Try again later."}
    assert "accessToken" in (await session(http, f"sandbox-session-{user}")).json()

    await control(http, "faults", {"user": user, "fault": "server_error", "path": "any"})
    r = await http.get("/backend-api/models", headers=auth)
    assert r.status_code == 500 and r.text == "Internal Server Error"
    assert (await http.get("/backend-api/models", headers=auth)).status_code == 200


async def test_status_directive_answers_at_once_and_changes_nothing(http: httpx.AsyncClient) -> None:
    auth = await token_of(http, new_user())
    r = await http.post(CONVERSATION, json=turn("limited [sandbox status=429]"), headers=auth)
    assert r.status_code == 429 and r.json() == {"detail": "Too many requests in 1 hour. Try again later."}
    r = await http.post(CONVERSATION, json=turn("teapot [sandbox status=418]"), headers=auth)
    assert r.status_code == 418 and isinstance(r.json()["detail"], str)
    assert (await http.get("/backend-api/conversations", headers=auth)).json()["total"] == 0


async def test_pacing_and_hang_directives(http: httpx.AsyncClient, fake: Proc) -> None:
    user = new_user()
    auth = await token_of(http, user)
    started = time.monotonic()
    _, final = await converse(http, auth, turn("paced [sandbox tokens=3 first_token_ms=150 token_delay_ms=60]"))
    assert time.monotonic() - started >= 0.150 + 2 * 0.060
    assert final["content"]["parts"] == [" ".join(words("paced", 3))]
    # hang: no answer at all until the client gives up; nothing is stored
    async with httpx.AsyncClient(base_url=fake.url, timeout=0.3) as impatient:
        with pytest.raises(httpx.ReadTimeout):
            await impatient.post(CONVERSATION, json=turn("stuck [sandbox hang=1]"), headers=auth)
    for _ in range(200):
        hung = [r for r in (await http.get("/_sandbox/chatgpt/requests")).json()["requests"]
                if r["user"] == user][-1]
        if hung["ended"] is not None:
            break
        await asyncio.sleep(0.01)
    assert hung["finish"] == "disconnected" and hung["status"] is None
    assert (await http.get("/backend-api/conversations", headers=auth)).json()["total"] == 1


# ---- one turn at a time ---------------------------------------------------------------------------------


async def test_one_turn_at_a_time_per_user(http: httpx.AsyncClient, fake: Proc) -> None:
    user = new_user()
    auth = await token_of(http, user)
    other = await token_of(http, new_user())
    async with httpx.AsyncClient(base_url=fake.url, timeout=10.0) as first_client, first_client.stream(
        "POST", CONVERSATION, json=turn("slow [sandbox tokens=4 hang_after=1]"), headers=auth
    ) as first:
        assert first.status_code == 200
        seen = ""
        async for chunk in first.aiter_text():
            seen += chunk
            if seen.count("\"assistant\"") >= 2:  # the first word is out: the turn is mid-stream
                break
        second = await http.post(CONVERSATION, json=turn("impatient"), headers=auth)
        assert second.status_code == 429 and second.json() == {"detail": ONE_AT_A_TIME}
        await converse(http, other, turn("another user is not held up [sandbox tokens=1]"))
    # the first client has gone: once the fake has noticed, the user may talk again
    for _ in range(200):
        records = (await http.get("/_sandbox/chatgpt/requests")).json()["requests"]
        mine = [r for r in records if r["user"] == user]
        if mine[0]["ended"] is not None:
            break
        await asyncio.sleep(0.01)
    assert mine[0]["finish"] == "disconnected"
    await converse(http, auth, turn("my turn now [sandbox tokens=1]"))
    stats = (await http.get("/_sandbox/chatgpt/stats")).json()["stats"][user]
    assert stats == {"max_concurrent": 2, "turns": 2, "session_calls": 0}


# ---- bad input and the observation log ---------------------------------------------------------------


def _broken(**changes: Any) -> dict[str, Any]:
    body = turn("hi")
    for key, value in changes.items():
        if value is None:
            body.pop(key)
        else:
            body[key] = value
    return body


BAD_BODIES: list[tuple[str, Any]] = [
    ("action", _broken(action="jump")),
    ("no-messages", _broken(messages=None)),
    ("empty-messages", _broken(messages=[])),
    ("no-parent", _broken(parent_message_id=None)),
    ("no-model", _broken(model=None)),
    ("bad-conversation-id", _broken(conversation_id=7)),
    ("variant-without-conversation", _broken(action="variant")),
    ("multimodal", _broken(messages=[{**message("x"), "content": {"content_type": "multimodal_text",
                                                                  "parts": ["x"]}}])),
    ("parts-not-strings", _broken(messages=[{**message("x"), "content": {"content_type": "text", "parts": [1]}}])),
    ("no-role", _broken(messages=[{"id": "m", "content": {"content_type": "text", "parts": ["x"]}}])),
    ("no-id", _broken(messages=[{"author": {"role": "user"}, "content": {"content_type": "text", "parts": ["x"]}}])),
    ("bad-directive", turn("hi [sandbox tokenz=3]")),
    ("list-body", []),
]


@pytest.mark.parametrize("body", [b for _, b in BAD_BODIES], ids=[n for n, _ in BAD_BODIES])
async def test_bad_bodies_get_400_detail(http: httpx.AsyncClient, body: Any) -> None:
    auth = await token_of(http, new_user())
    r = await http.post(CONVERSATION, json=body, headers=auth)
    assert r.status_code == 400 and isinstance(r.json()["detail"], str), r.text


async def test_not_json_and_unknown_parent_get_400(http: httpx.AsyncClient) -> None:
    auth = await token_of(http, new_user())
    r = await http.post(CONVERSATION, content=b"{not json", headers=auth)
    assert r.status_code == 400 and isinstance(r.json()["detail"], str)
    _, final = await converse(http, auth, turn("root [sandbox tokens=1]"))
    r = await http.post(CONVERSATION, json=turn("x", conversation_id=final["conversation_id"]), headers=auth)
    assert r.status_code == 400  # its random parent is not a node of that conversation
    bad_control = await http.post("/_sandbox/chatgpt/faults", json={"user": "alice", "fault": "meteor"})
    assert bad_control.status_code == 400 and isinstance(bad_control.json()["detail"], str)


async def test_requests_log_records_every_call_without_secrets(http: httpx.AsyncClient) -> None:
    user = new_user()
    auth = await token_of(http, user)
    body = turn("logged [sandbox tokens=1]")
    await converse(http, auth, body)
    await session(http, f"sandbox-session-{user}")
    raw = (await http.get("/_sandbox/chatgpt/requests")).text
    assert auth["Authorization"].removeprefix("Bearer ") not in raw and JWT_PREFIX not in raw
    mine = [r for r in orjson.loads(raw)["requests"] if r["user"] == user]
    assert [(r["method"], r["path"], r["status"]) for r in mine] == [
        ("POST", CONVERSATION, 200), ("GET", "/api/auth/session", 200)]
    posted = mine[0]
    assert posted["action"] == "next" and posted["model"] == "auto" and posted["conversation_id"] is None
    assert posted["parent_message_id"] == body["parent_message_id"]
    sent = body["messages"][0]
    assert posted["messages"] == [{"id": sent["id"], "role": "user", "text": "logged [sandbox tokens=1]"}]
    assert posted["started"] <= posted["ended"] and posted["finish"] == "stop"
