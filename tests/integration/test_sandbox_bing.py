"""The sandbox's Bing Chat ("Sydney") fake (services/sandbox/bing/), driven as a real subprocess on the
raw wire: httpx for the HTTP routes, `websockets` for the SignalR ChatHub.

Checked against the fact sheet (/work/shared/upstreams/sydney.md §1-§7, §10). Each test uses its own
account names, so tests do not see each other's faults or counters.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import orjson
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from libs.devproc import Proc, free_port, spawn_python_service
from services.sandbox.bing.answer import answer_words
from services.sandbox.png import tiles

RS = "\x1e"
CREATE = "/edgesvc/turing/conversation/create"
PNG = tiles(8, 8, 1)


@pytest.fixture(scope="module")
def fake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    port = free_port()
    proc = spawn_python_service(
        "sandbox-bing", "services.sandbox", env={"PORT": str(port)},
        log_dir=tmp_path_factory.mktemp("sandbox-bing-logs"), health_url=f"http://127.0.0.1:{port}/healthz",
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


def account() -> str:
    return "a" + uuid.uuid4().hex[:10]


@dataclass
class Conv:
    id: str
    client_id: str
    token: str  # the encrypted signature
    response: httpx.Response
    cookie: str  # what create was sent, sent again on the upgrade (as SydneyQt does)


async def create(http: httpx.AsyncClient, name: str | None, extra: str = "", path: str = CREATE) -> Conv:
    cookie = "; ".join(p for p in (f"_U=sandbox-u-{name}" if name else "", extra) if p)
    r = await http.get(path, headers={"Cookie": cookie} if cookie else {})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["result"] == {"value": "Success", "message": None}, body
    return Conv(body["conversationId"], body["clientId"], r.headers["x-sydney-encryptedconversationsignature"], r,
                cookie)


def ws_url(fake: Proc, token: str | None) -> str:
    base = fake.url.replace("http://", "ws://") + "/sydney/ChatHub"
    return base if token is None else f"{base}?sec_access_token={quote(token, safe='')}"


async def hub(fake: Proc, conv: Conv, handshake: str = '{"protocol": "json", "version": 1}') -> ClientConnection:
    headers = {"Cookie": conv.cookie} if conv.cookie else {}
    ws = await websockets.connect(ws_url(fake, conv.token), open_timeout=5, max_size=None, additional_headers=headers)
    await ws.send(handshake + RS)
    assert await ws.recv() == "{}" + RS
    return ws


def invocation(conv: Conv, text: str, *, context: str = "", image_url: str | None = None, start: bool = True,
               invocation_id: str = "0", **arg: Any) -> dict[str, Any]:
    request_id = str(uuid.uuid4())
    argument: dict[str, Any] = {
        "optionsSets": ["fluxcopilot", "nojbf", "nosearchall"], "source": "cib-ccp", "isStartOfSession": start,
        "requestId": request_id, "tone": "Creative", "conversationSignature": None,
        "message": {"locale": "en-US", "author": "user", "inputMethod": "Keyboard", "text": text, "messageType": "Chat",
                    "requestId": request_id, "messageId": request_id, "imageUrl": image_url},
        "participant": {"id": conv.client_id}, "spokenTextMode": "None", "conversationId": conv.id,
        "previousMessages": [{"author": "user", "description": context, "contextType": "WebPage",
                              "messageType": "Context", "hiddenText": ""}],
        "gptId": "copilot",
    }
    argument.update(arg)
    return {"arguments": [argument], "invocationId": invocation_id, "target": "chat", "type": 4}


def records(frame: str) -> list[dict[str, Any]]:
    assert frame.endswith(RS), frame
    return [orjson.loads(piece) for piece in frame.split(RS) if piece]


async def until_final(ws: ClientConnection) -> list[str]:
    """Every frame up to and including the one holding type:2 (bounded by the read timeout)."""
    frames: list[str] = []
    for _ in range(500):
        frame = await asyncio.wait_for(ws.recv(), 5)
        assert isinstance(frame, str)
        frames.append(frame)
        if any(r.get("type") == 2 for r in records(frame)):
            return frames
    raise AssertionError("no type:2 within 500 frames")


async def ask(fake: Proc, conv: Conv, text: str, **kw: Any) -> list[str]:
    ws = await hub(fake, conv)
    try:
        await ws.send('{"type": 6}' + RS + json.dumps(invocation(conv, text, **kw)) + RS)  # two records, one frame
        return await until_final(ws)
    finally:
        await ws.close()


def updates(frames: list[str]) -> list[dict[str, Any]]:
    """arguments[0] of every type:1 update carrying messages."""
    found = [r["arguments"][0] for f in frames for r in records(f) if r.get("type") == 1]
    return [arg for arg in found if "messages" in arg]


def final(frames: list[str]) -> dict[str, Any]:
    last = records(frames[-1])
    assert [r["type"] for r in last] == [2, 3], last  # type:2 and type:3 in ONE websocket frame
    assert last[1] == {"type": 3, "invocationId": last[0]["invocationId"]}
    item: dict[str, Any] = last[0]["item"]
    return item


def sydneyqt_deltas(frames: list[str]) -> list[str]:
    """§3.5: the deltas SydneyQt derives from cumulative text (cursor resets the written count)."""
    out: list[str] = []
    wrote = 0
    for arg in updates(frames):
        msg = arg["messages"][0]
        if msg.get("messageType"):
            continue
        if "cursor" in arg:
            wrote = 0
        text = msg["text"]
        if len(text) > wrote:
            out.append(text[wrote:])
            wrote = len(text)
        elif len(text) < wrote:
            wrote = len(text)
    return out


async def control(http: httpx.AsyncClient, method: str, name: str, body: Any = None) -> Any:
    r = await http.request(method, f"/_sandbox/bing/{name}", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def kblob_form(image: bytes | None, knowledge: Any = None, *, typed: bool = False) -> tuple[bytes, str]:
    boundary = "----sandboxboundary" + uuid.uuid4().hex
    request = knowledge if knowledge is not None else {
        "imageInfo": {}, "knowledgeRequest": {"invokedSkills": ["ImageById"], "subscriptionId": "Bing.Chat.Multimodal",
                                              "invokedSkillsRequestData": {"enableFaceBlur": False},
                                              "convoData": {"convoid": "", "convotone": "Creative"}}}
    parts = [("knowledgeRequest", json.dumps(request).encode(), "application/json")]
    if image is not None:
        parts.append(("imageBase64", base64.b64encode(image), "application/octet-stream"))
    body = b""
    for name, data, ctype in parts:
        body += f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n".encode()
        if typed:
            body += f"Content-Type: {ctype}\r\n".encode()
        body += b"\r\n" + data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


# ---- create -------------------------------------------------------------------------------------


async def test_create_answers_the_sheets_shape_and_sets_rotating_cookies(http: httpx.AsyncClient) -> None:
    name = account()
    conv = await create(http, name, "KievRPSSecAuth=secret-k=v;")
    assert re.fullmatch(r"51D\|BingProd\|[0-9A-F]{64}", conv.id) and conv.client_id.isdigit()
    for header in ("x-sydney-encryptedconversationsignature", "x-sydney-conversationsignature"):
        value = conv.response.headers[header]
        assert {"+", "/", "="} <= set(value) and base64.b64decode(value, validate=True)
    set_cookies = conv.response.headers.get_list("set-cookie")
    pairs = [c.split(";")[0].partition("=") for c in set_cookies]
    assert [p[0] for p in pairs] == ["MUIDB", "_RwBf"]
    assert "=" in pairs[1][2] and "&" in pairs[1][2]  # the value itself holds '='
    # the client merged MUIDB back: only the rotating _RwBf is set again, with a new value
    again = await create(http, name, f"MUIDB={pairs[0][2]}; _RwBf={pairs[1][2]}", path="/turing/conversation/create")
    second = [c.split(";")[0].partition("=") for c in again.response.headers.get_list("set-cookie")]
    assert [p[0] for p in second] == ["_RwBf"] and second[0][2] != pairs[1][2]

    log = (await control(http, "GET", "requests"))["requests"]
    mine = [r for r in log if r["account"] == name]
    assert [r["kind"] for r in mine] == ["create", "create"]
    assert mine[0]["cookies"] == ["_U", "KievRPSSecAuth"] and mine[1]["cookies"] == ["_U", "MUIDB", "_RwBf"]
    assert pairs[1][2] not in json.dumps(log) and "secret-k" not in json.dumps(log)  # names, never values
    stats = (await control(http, "GET", "stats"))["stats"]
    assert stats["conversations"][name] == 2


async def test_create_refuses_an_unknown_user_and_allows_anonymous(http: httpx.AsyncClient) -> None:
    r = await http.get(CREATE, headers={"Cookie": "_U=1AbCdEf-real-looking-cookie"})
    assert r.status_code == 200 and r.json()["result"]["value"] == "UnauthorizedRequest"
    assert "x-sydney-encryptedconversationsignature" not in r.headers
    anonymous = await create(http, None)
    assert anonymous.token


# ---- the ChatHub --------------------------------------------------------------------------------


async def test_upgrade_needs_the_escaped_token_of_a_created_conversation(fake: Proc, http: httpx.AsyncClient) -> None:
    conv = await create(http, account())
    base = ws_url(fake, None)
    for url in (base, base + "?sec_access_token=bm90LWlzc3VlZA%3D%3D", base + "?sec_access_token=" + conv.token):
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            await websockets.connect(url, open_timeout=5)
        assert refused.value.response.status_code == 401, url  # the unescaped token: '+' read as a space
    log = (await control(http, "GET", "requests"))["requests"]
    assert [r["token"] for r in log if r["kind"] == "chathub"][-3:] == ["missing", "unknown", "unknown"]


async def test_happy_path_streams_cumulative_text_with_cursor_once(fake: Proc, http: httpx.AsyncClient) -> None:
    conv = await create(http, account())
    frames = await ask(fake, conv, "Hello there [sandbox tokens=6]")
    expected = " ".join(answer_words("Hello there", "", None, 6))

    first = records(frames[0])
    assert len(frames[0].split(RS)) == 2 and "messages" not in first[0]["arguments"][0]  # throttling only
    assert first[0]["arguments"][0]["throttling"] == {"maxNumUserMessagesInConversation": 30,
                                                      "numUserMessagesInConversation": 1}
    assert records(frames[1])[0] == {"type": 6}  # a server ping, in the same frame as the first update
    ups = updates(frames)
    texts = [u["messages"][0]["text"] for u in ups]
    assert texts == [" ".join(expected.split()[:k]) for k in range(1, 7)]
    assert ["cursor" in u for u in ups] == [True] + [False] * 5
    bot_id = ups[0]["messages"][0]["messageId"]
    assert ups[0]["cursor"] == {"j": f"$['{bot_id}'].adaptiveCards[0].body[0].text", "p": -1}
    assert all(u["messages"][0]["adaptiveCards"][0]["body"][0]["text"] == t for u, t in zip(ups, texts, strict=True))
    assert "".join(sydneyqt_deltas(frames)) == expected

    item = final(frames)
    user, bot = item["messages"]
    assert user["author"] == "user" and user["text"] == "Hello there [sandbox tokens=6]"
    assert user["contentOrigin"] == "cib"
    assert user["from"]["id"] == conv.client_id
    assert bot["text"] == expected and bot["messageId"] == bot_id and "messageType" not in bot
    assert [s["messageType"] for s in bot["suggestedResponses"]] == ["Suggestion"] * 3
    assert item["result"]["value"] == "Success" and item["result"]["message"] == expected
    assert item["conversationId"] == conv.id and item["throttling"]["numUserMessagesInConversation"] == 1


async def test_handshake_without_spaces_and_records_split_over_frames(fake: Proc, http: httpx.AsyncClient) -> None:
    conv = await create(http, account())
    ws = await hub(fake, conv, handshake='{"protocol":"json","version":1}')
    try:
        await ws.send('{"type":6}' + RS)
        await ws.send('{"type":6}' + RS + '{"type":6}' + RS + json.dumps(invocation(conv, "x [sandbox tokens=2]")) + RS)
        frames = await until_final(ws)
        assert final(frames)["result"]["value"] == "Success"
        # the same socket answers a second invocation; the count grows
        await ws.send(json.dumps(invocation(conv, "y [sandbox tokens=2]", start=False, invocation_id="1")) + RS)
        frames = await until_final(ws)
        assert records(frames[-1])[0]["invocationId"] == "1"
        assert final(frames)["throttling"]["numUserMessagesInConversation"] == 2
    finally:
        await ws.close()


async def test_a_continued_conversation_counts_up_until_it_expires(fake: Proc, http: httpx.AsyncClient) -> None:
    conv = await create(http, account())
    await ask(fake, conv, "one [sandbox tokens=1]")
    frames = await ask(fake, conv, "two [sandbox tokens=1]", start=False)
    assert records(frames[0])[0]["arguments"][0]["throttling"]["numUserMessagesInConversation"] == 2
    assert final(frames)["throttling"]["numUserMessagesInConversation"] == 2

    other = await create(http, account())
    wrong = await ask(fake, conv, "three", conversationId=other.id)
    assert len(wrong) == 1  # the error result comes alone, no throttling frame
    item = final(wrong)
    assert "messages" not in item and item["result"]["value"] == "InvalidSession"
    assert item["result"]["message"] == (f"Conversation '{other.id}' doesn't exist or has expired. "
                                         "Conversations expire after 06:00:00.")
    not_me = final(await ask(fake, conv, "four", participant={"id": other.client_id}))
    assert not_me["result"]["value"] == "InvalidRequest" and "participant.id" in not_me["result"]["message"]

    assert (await control(http, "POST", "expire", {"conversationId": conv.id})) == {"expired": 1}
    expired = final(await ask(fake, conv, "five", start=False))
    assert expired["result"]["value"] == "InvalidSession" and conv.id in expired["result"]["message"]

    log = (await control(http, "GET", "requests"))["requests"]
    chats = [r for r in log if r["kind"] == "chat" and r["conversation"] == conv.id]
    assert [c["isStartOfSession"] for c in chats] == [True, False, True, True, False]
    assert chats[0]["tone"] == "Creative" and "nosearchall" in chats[0]["optionsSets"] and chats[0]["context"] == ""


async def test_search_sends_query_results_and_empty_title_reference_lines(fake: Proc, http: httpx.AsyncClient) -> None:
    conv = await create(http, account())
    frames = await ask(fake, conv, "weather in Paris today [sandbox search tokens=3]")
    ups = updates(frames)
    query, result = ups[0]["messages"][0], ups[1]["messages"][0]
    assert query["messageType"] == "InternalSearchQuery"
    assert query["text"] == "Searching the web for: `weather in Paris today`"
    assert result["messageType"] == "InternalSearchResult" and "cursor" not in ups[0] and "cursor" not in ups[1]
    urls = [item["url"] for group in json.loads(result["text"]) for items in group.values() for item in items]
    assert len(urls) == 3
    cursor_frame = ups[2]
    assert "cursor" in cursor_frame
    message = cursor_frame["messages"][0]
    card = message["adaptiveCards"][0]["body"][0]["text"]
    assert card.startswith("".join(f'[{i}]: {u} ""\n' for i, u in enumerate(urls, 1)) + "\n")
    # SydneyQt's §3.7 extraction: card text minus the message text, lines stripped of spaces and quotes
    lines = [ln.strip(' "') for ln in card.removesuffix(message["text"]).splitlines() if ln.strip()]
    found = [re.fullmatch(r"\[(\d+)\]: (.*)", ln) for ln in lines]
    assert [(int(m.group(1)), m.group(2)) for m in found if m] == list(enumerate(urls, 1))
    answer_msg = final(frames)["messages"][-1]
    assert answer_msg["text"] == " ".join(answer_words("weather in Paris today", "", None, 3))
    assert [a["seeMoreUrl"] for a in answer_msg["sourceAttributions"]] == urls


@pytest.mark.parametrize("value", ["Throttled", "CaptchaChallenge", "InvalidSession", "UnauthorizedRequest",
                                   "InvalidRequest"])
async def test_error_results_at_once_or_after_k_words(fake: Proc, http: httpx.AsyncClient, value: str) -> None:
    conv = await create(http, account())
    at_once = await ask(fake, conv, f"hi [sandbox result={value}]")
    item = final(at_once)
    assert len(at_once) == 1 and "messages" not in item and item["firstNewMessageIndex"] is None
    assert item["result"]["value"] == value and item["result"]["message"]
    if value == "Throttled":
        assert item["result"]["message"] == "Request is throttled."
    if value == "CaptchaChallenge":
        assert item["result"]["message"] == "User needs to solve CAPTCHA to continue."
    later = await ask(fake, conv, f"hi [sandbox result={value} after=3]")
    assert [u["messages"][0]["text"] for u in updates(later)] == [
        " ".join(answer_words("hi", "", None)[:k]) for k in (1, 2, 3)]
    assert final(later)["result"]["value"] == value


async def test_close7_and_drop_end_the_socket_without_a_result(fake: Proc, http: httpx.AsyncClient) -> None:
    conv = await create(http, account())
    ws = await hub(fake, conv)
    await ws.send(json.dumps(invocation(conv, "bye [sandbox close7]")) + RS)
    close7 = {"type": 7, "error": "Connection closed with an error.", "allowReconnect": True}
    assert records(str(await ws.recv())) == [close7]
    with pytest.raises(websockets.exceptions.ConnectionClosedOK):
        await ws.recv()
    assert ws.close_code == 1000

    ws = await hub(fake, conv)
    await ws.send(json.dumps(invocation(conv, "bye [sandbox drop tokens=4]")) + RS)
    got: list[str] = []
    with pytest.raises(websockets.exceptions.ConnectionClosedError):
        for _ in range(20):
            got.append(str(await ws.recv()))
    assert ws.close_code == 1006  # no close frame at all
    assert len(updates(got)) == 2 and not any(r.get("type") == 2 for f in got for r in records(f))


async def test_apology_shrink_two_messages_loading_and_image(fake: Proc, http: httpx.AsyncClient) -> None:
    conv = await create(http, account())
    words = answer_words("tell", "", None, 4)

    revoke = await ask(fake, conv, "tell [sandbox apology=2 tokens=4]")
    ups = updates(revoke)
    assert [u["messages"][0]["contentOrigin"] for u in ups] == ["DeepLeo", "DeepLeo", "Apology"]
    assert "cursor" not in ups[2] and ups[2]["messages"][0]["messageId"] == ups[0]["messages"][0]["messageId"]
    assert final(revoke)["messages"][-1]["contentOrigin"] == "Apology"
    filtered = updates(await ask(fake, conv, "tell [sandbox apology=0]"))
    assert len(filtered) == 1 and "cursor" in filtered[0] and filtered[0]["messages"][0]["contentOrigin"] == "Apology"

    shrink = [u["messages"][0]["text"] for u in updates(await ask(fake, conv, "tell [sandbox shrink tokens=4]"))]
    assert shrink == [" ".join(words[:k]) for k in (1, 2, 1, 3, 4)]  # shrinks once, then grows on
    short = updates(await ask(fake, conv, "tell [sandbox shrink tokens=2]"))
    assert short[-1]["messages"][0]["text"] == " ".join(words[:2])  # too short to shrink before its end

    two = await ask(fake, conv, "tell [sandbox two_messages tokens=4]")
    ups = updates(two)
    assert [u["messages"][0]["text"] for u in ups] == [words[0], " ".join(words[:2]), words[2],
                                                       " ".join(words[2:])]
    assert ["cursor" in u for u in ups] == [True, False, True, False]
    assert "".join(sydneyqt_deltas(two)) == " ".join(words[:2]) + " ".join(words[2:])
    assert [m["text"] for m in final(two)["messages"][1:]] == [" ".join(words[:2]), " ".join(words[2:])]

    loading = updates(await ask(fake, conv, "tell [sandbox loading tokens=1]"))
    assert loading[0]["messages"][0]["messageType"] == "InternalLoaderMessage"
    assert loading[0]["messages"][0]["hiddenText"] == "Generating answers for you..."

    image = updates(await ask(fake, conv, "a red fox [sandbox image tokens=1 polls=1]"))
    gcq = image[-1]["messages"][0]
    assert gcq["messageType"] == "GenerateContentQuery" and gcq["contentType"] == "IMAGE"
    assert gcq["text"] == "a picture of a red fox [sandbox polls=1]"


async def test_bad_frames_and_bad_invocations(fake: Proc, http: httpx.AsyncClient) -> None:
    conv = await create(http, account())
    bad = final(await ask(fake, conv, "hi [sandbox colour=blue]"))
    assert bad["result"]["value"] == "InvalidRequest" and "colour" in bad["result"]["message"]
    ws = await hub(fake, conv)
    await ws.send(json.dumps({"type": 4, "target": "chat", "invocationId": "0", "arguments": [{}]}) + RS)
    item = final([str(await ws.recv())])
    assert item["result"]["value"] == "InvalidRequest" and "message" in item["result"]["message"]
    await ws.send('{"type":6}')  # no record separator
    (close,) = records(str(await ws.recv()))
    assert close["type"] == 7 and "0x1E" in close["error"]
    with pytest.raises(websockets.exceptions.ConnectionClosedOK):
        await ws.recv()

    no_handshake = await websockets.connect(ws_url(fake, conv.token), open_timeout=5)
    await no_handshake.send('{"type":6}' + RS)
    assert "handshake" in records(str(await no_handshake.recv()))[0]["error"]
    with pytest.raises(websockets.exceptions.ConnectionClosedOK):
        await no_handshake.recv()


async def test_silence_and_latency_hold_frames_back(fake: Proc, http: httpx.AsyncClient) -> None:
    conv = await create(http, account())
    ws = await hub(fake, conv)
    try:
        await ws.send(json.dumps(invocation(conv, "wait [sandbox tokens=4 silence_ms=600 after=2]")) + RS)
        stamps: list[float] = []
        for _ in range(10):
            frame = str(await asyncio.wait_for(ws.recv(), 5))
            stamps.append(time.monotonic())
            if '"type":2' in frame:
                break
        gaps = [b - a for a, b in itertools.pairwise(stamps)]
        assert max(gaps) >= 0.55 and gaps.index(max(gaps)) == 2  # after the 2nd word's frame
    finally:
        await ws.close()
    started = time.monotonic()
    await ask(fake, conv, "slow [sandbox tokens=3 latency_ms=100]")
    assert time.monotonic() - started >= 0.39  # throttle, 3 words, final: 4 gaps of 100 ms


# ---- kblob and the image creator ----------------------------------------------------------------


async def test_kblob_stores_images_the_chat_then_sees(fake: Proc, http: httpx.AsyncClient) -> None:
    body, ctype = kblob_form(PNG)
    r = await http.post("/images/kblob", content=body, headers={"Content-Type": ctype})
    assert r.status_code == 200, r.text
    ids = r.json()
    assert set(ids) == {"blobId", "processedBlobId"} and ids["blobId"] and ids["processedBlobId"]
    for bcid in ids.values():
        got = await http.get("/images/blob", params={"bcid": bcid})
        assert got.status_code == 200 and got.content == PNG and got.headers["content-type"] == "image/png"
    typed_body, typed_ctype = kblob_form(PNG, typed=True)  # sydney.py's parts carry content types
    typed = await http.post("/images/kblob", content=typed_body, headers={"Content-Type": typed_ctype})
    assert typed.json()["blobId"]
    by_url = {"imageInfo": {"url": "https://example.invalid/fox.jpg"},
              "knowledgeRequest": {"invokedSkills": ["ImageById"]}}
    url_body, url_ctype = kblob_form(None, by_url)  # sydney.py's upload by URL: no imageBase64 part
    assert (await http.post("/images/kblob", content=url_body, headers={"Content-Type": url_ctype})).json()["blobId"]

    conv = await create(http, account())
    url = f"https://www.bing.com/images/blob?bcid={ids['blobId']}"
    frames = await ask(fake, conv, "what is this [sandbox tokens=2]", image_url=url, context="[user](#message)\nHi")
    text = final(frames)["messages"][-1]["text"]
    assert text.startswith("I see your image. I read your context of 19 characters.")
    assert text == " ".join(answer_words("what is this", "[user](#message)\nHi", "known", 2))
    unknown = final(await ask(fake, conv, "and this", image_url="https://www.bing.com/images/blob?bcid=nope"))
    assert unknown["messages"][-1]["text"].startswith("I cannot see your image.")

    rejected_body, rejected_ctype = kblob_form(b"just some text, not an image")
    r = await http.post("/images/kblob", content=rejected_body, headers={"Content-Type": rejected_ctype})
    assert r.status_code == 200 and r.json() == {"blobId": "", "processedBlobId": ""}


@pytest.mark.parametrize("case", ["no-boundary", "no-image", "flat-request", "bad-base64", "not-multipart"])
async def test_kblob_refuses_bad_forms(http: httpx.AsyncClient, case: str) -> None:
    body, ctype = kblob_form(PNG)
    if case == "no-boundary":
        ctype = "multipart/form-data"
    elif case == "no-image":
        body, ctype = kblob_form(None)
    elif case == "flat-request":
        body, ctype = kblob_form(PNG, {"invokedSkills": ["ImageById"]})
    elif case == "bad-base64":
        body = body.replace(base64.b64encode(PNG), b"!!not base64!!")
    else:
        ctype = "application/json"
    r = await http.post("/images/kblob", content=body, headers={"Content-Type": ctype})
    assert r.status_code == 400, (case, r.text)


async def test_image_creator_polls_then_serves_thumbnails(fake: Proc, http: httpx.AsyncClient) -> None:
    name = account()
    cookies = {"Cookie": f"_U=sandbox-u-{name}"}
    asked = updates(await ask(fake, await create(http, name), "a red fox [sandbox image tokens=1 polls=2]"))
    prompt = asked[-1]["messages"][0]["text"]  # the GenerateContentQuery's image prompt
    assert prompt == "a picture of a red fox [sandbox polls=2]"
    query = urlencode({"partner": "sydney", "re": 1, "showselective": 1, "sude": 1, "kseed": 7500, "SFX": 2,
                       "gptexp": "unknown", "q": prompt, "iframeid": str(uuid.uuid4())})
    page = await http.get(f"/images/create?{query}", headers=cookies)
    assert page.status_code == 200
    match = re.search(r'<div id="gir" data-c="(/images/create/async/results/([^?"]+)\?[^"]*)"', page.text)
    assert match and "&amp;IG=" in match.group(1) and match.group(1).endswith("&amp;IID=images.as")
    poll = f"/images/create/async/results/{match.group(2)}?" + urlencode(
        {"q": prompt, "partner": "sydney", "showselective": 1, "IID": "images.as"})
    assert [(await http.get(poll, headers=cookies)).text for _ in range(2)] == ["", ""]
    assert (await http.get(poll)).status_code == 403  # polls need the account's cookies
    ready = (await http.get(poll, headers=cookies)).text
    srcs = re.findall(r'<img class="mimg"[^\n]*? src="([^"]+)"', ready)
    assert len(srcs) == 4 and all(s.startswith(fake.url + "/th/id/OIG.") for s in srcs)
    assert all(s.endswith("?w=270&h=270&c=6&r=0&o=5&pid=ImgGn") for s in srcs)
    thumb = await http.get(srcs[0].removeprefix(fake.url))
    assert thumb.status_code == 200 and thumb.content.startswith(b"\x89PNG\r\n\x1a\n")

    async def poll_of(text: str) -> str:
        created = await http.get("/images/create", params={"partner": "sydney", "q": text}, headers=cookies)
        found = re.search(r'data-c="(/images/create/async/results/[^?"]+)', created.text)
        assert found, created.text
        return found.group(1)

    rejected = await poll_of("a fox [sandbox rejected]")
    assert "Please try again or come back later" in (await http.get(rejected, headers=cookies)).text
    never = await poll_of("a fox [sandbox never]")
    assert [(await http.get(never, headers=cookies)).text for _ in range(5)] == [""] * 5
    for headers in ({}, {"Cookie": "_U=not-a-sandbox-user"}):
        signed_out = await http.get("/images/create", params={"partner": "sydney", "q": "a fox"}, headers=headers)
        assert signed_out.status_code == 200 and 'id="gir"' not in signed_out.text


# ---- control: faults, log, stats ----------------------------------------------------------------


async def test_faults_hit_one_account_in_arming_order(fake: Proc, http: httpx.AsyncClient) -> None:
    x, y = account(), account()
    for kind in ("Throttled", "CaptchaChallenge", "close7"):
        await control(http, "POST", "faults", {"account": x, "kind": kind})
    await control(http, "POST", "faults", {"account": x, "kind": "create_status=503", "times": 2})
    assert [f["kind"] for f in (await control(http, "GET", "faults"))["faults"] if f["account"] == x] == [
        "Throttled", "CaptchaChallenge", "close7", "create_status=503"]

    for _ in range(2):
        assert (await http.get(CREATE, headers={"Cookie": f"_U=sandbox-u-{x}"})).status_code == 503
    conv_x, conv_y = await create(http, x), await create(http, y)
    assert final(await ask(fake, conv_y, "fine [sandbox tokens=1]"))["result"]["value"] == "Success"
    assert final(await ask(fake, conv_x, "a [sandbox tokens=1]"))["result"]["value"] == "Throttled"
    assert final(await ask(fake, conv_x, "b [sandbox tokens=1]"))["result"]["value"] == "CaptchaChallenge"
    ws = await hub(fake, conv_x)
    await ws.send(json.dumps(invocation(conv_x, "c [sandbox tokens=1]")) + RS)
    assert records(str(await ws.recv()))[0]["type"] == 7
    with pytest.raises(websockets.exceptions.ConnectionClosedOK):
        await ws.recv()
    await control(http, "POST", "faults", {"account": x, "kind": "drop"})
    ws = await hub(fake, conv_x)
    await ws.send(json.dumps(invocation(conv_x, "c [sandbox tokens=4]")) + RS)
    with pytest.raises(websockets.exceptions.ConnectionClosedError):
        for _ in range(10):
            assert '"type":2' not in str(await ws.recv())
    assert final(await ask(fake, conv_x, "d [sandbox tokens=1]"))["result"]["value"] == "Success"
    assert not [f for f in (await control(http, "GET", "faults"))["faults"] if f["account"] == x]

    bad = await http.post("/_sandbox/bing/faults", json={"account": x, "kind": "Sleepy"})
    assert bad.status_code == 400 and "kind" in bad.json()["error"]
    log = (await control(http, "GET", "requests"))["requests"]
    assert [r["result"] for r in log if r["kind"] == "chat" and r["account"] == x] == [
        "Throttled", "CaptchaChallenge", "close7", "drop", "Success"]
    upgrade = next(r for r in log if r["kind"] == "chathub" and r["account"] == x)
    assert upgrade["headers"]["cookie"] == "_U" and upgrade["token"] == "ok"
    assert conv_x.token not in json.dumps(log) and f"sandbox-u-{x}" not in json.dumps(log)
    stats = (await control(http, "GET", "stats"))["stats"]
    assert stats["chats"][x] == 5 and stats["conversations"][x] == 1 and stats["max_open_websockets"] >= 1


async def test_faults_for_any_account_reach_anonymous_conversations(fake: Proc, http: httpx.AsyncClient) -> None:
    conv = await create(http, None)
    await control(http, "POST", "faults", {"account": "any", "kind": "UnauthorizedRequest"})
    refused = final(await ask(fake, conv, "hi [sandbox tokens=1]"))
    assert refused["result"]["value"] == "UnauthorizedRequest"
    assert refused["result"]["message"].startswith("The conversationSignature is not set")
    assert final(await ask(fake, conv, "hi [sandbox tokens=1]"))["result"]["value"] == "Success"


async def test_conversations_expire_after_the_configured_time(tmp_path_factory: pytest.TempPathFactory) -> None:
    port = free_port()
    short = spawn_python_service(
        "sandbox-bing-ttl", "services.sandbox", env={"PORT": str(port), "SANDBOX_BING_CONVERSATION_TTL": "1"},
        log_dir=tmp_path_factory.mktemp("sandbox-bing-ttl-logs"), health_url=f"http://127.0.0.1:{port}/healthz",
    )
    try:
        async with httpx.AsyncClient(base_url=short.url, timeout=10.0) as http:
            conv = await create(http, account())
            assert final(await ask(short, conv, "hi [sandbox tokens=1]"))["result"]["value"] == "Success"
            await asyncio.sleep(1.1)  # the expiry is a clock, not an event
            late = final(await ask(short, conv, "again", start=False))["result"]
            assert late["value"] == "InvalidSession" and late["message"].endswith("expire after 00:00:01.")
    finally:
        short.stop()
