"""The Bing client's I/O: ChatHub against a small websockets server on 127.0.0.1 that speaks the
sheet's frames (sydney.md §2-4, written by hand here, not with libs.bing's encoder), and
create/kblob against an httpx MockTransport (§1, §6)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import httpx
import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from libs.bing import client
from libs.bing.client import (
    BingEndpoints,
    BingUnavailable,
    ChatClosed,
    ChatRefused,
    ChatTimeout,
    CreateFailed,
    MalformedFrame,
    UploadRejected,
    chat,
    create_conversation,
    upload_image,
)
from libs.bing.conversation import Conversation
from libs.bing.turn import SydneyEvent, TurnEnd, TurnFailed, TurnItem, TurnReader

TOKEN = "enc+rypted/sig=="
COOKIE_SECRET = "U-cookie-secret-value=="
COOKIES = {"_U": COOKIE_SECRET, "MUID": "m1"}
CONVERSATION = Conversation("51D|BingProd|C", "914800962251629", None, TOKEN, "bearer-secret")
INVOCATION: dict[str, Any] = {
    "arguments": [{"message": {"text": "Hi"}}],
    "invocationId": "0",
    "target": "chat",
    "type": 4,
}
WAIT = 5.0  # bound on every await of the server's side

THROTTLING = (
    '{"type":1,"target":"update","arguments":[{"requestId":"R","throttling":'
    '{"maxNumUserMessagesInConversation":30,"numUserMessagesInConversation":1}}]}\x1e'
)
HEL = (
    '{"type":1,"target":"update","arguments":[{"cursor":{"j":"$[\'B1\'].adaptiveCards[0].body[0].text","p":-1},'
    '"messages":[{"text":"Hel","author":"bot","messageId":"B1","adaptiveCards":[{"type":"AdaptiveCard",'
    '"version":"1.0","body":[{"type":"TextBlock","text":"Hel","wrap":true}]}],"contentOrigin":"DeepLeo"}],'
    '"requestId":"R"}]}\x1e'
)
HELLO = (
    '{"type":1,"target":"update","arguments":[{"messages":[{"text":"Hello!","author":"bot","messageId":"B1",'
    '"adaptiveCards":[{"type":"AdaptiveCard","version":"1.0","body":[{"type":"TextBlock","text":"Hello!",'
    '"wrap":true}]}],"contentOrigin":"DeepLeo"}],"requestId":"R"}]}\x1e'
)
FINAL = (
    '{"type":2,"invocationId":"0","item":{"messages":[{"text":"Hi","author":"user"},{"text":"Hello!",'
    '"author":"bot","suggestedResponses":[{"text":"Hi again","messageType":"Suggestion"}]}],'
    '"firstNewMessageIndex":1,"conversationId":"C","requestId":"R","result":{"value":"Success",'
    '"message":"Hello!"}}}\x1e{"type":3,"invocationId":"0"}\x1e'
)
HAPPY_ITEMS: list[TurnItem] = [
    SydneyEvent("message", "Hel"),
    SydneyEvent("message", "lo!"),
    SydneyEvent("suggested_responses", '["Hi again"]'),
    TurnEnd(["Hi again"], None),
]


@dataclass
class Hub:
    """What the fake ChatHub saw, for assertions."""

    url: str = ""
    path: str = ""
    headers: Headers | None = None
    received: list[str] = field(default_factory=list)  # every text frame from the client, in order
    invocation: dict[str, Any] | None = None
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    close_code: int | None = None


Script = Callable[[ServerConnection, Hub], Awaitable[None]]


async def opening(ws: ServerConnection, hub: Hub) -> None:
    """§4's first three client frames, checked, with the `{}` reply after the handshake."""
    handshake = str(await asyncio.wait_for(ws.recv(), WAIT))
    hub.received.append(handshake)
    assert handshake.endswith("\x1e")
    assert json.loads(handshake[:-1]) == {"protocol": "json", "version": 1}
    await ws.send("{}\x1e")
    ping = await asyncio.wait_for(ws.recv(), WAIT)
    hub.received.append(str(ping))
    assert ping == '{"type":6}\x1e'
    invocation = str(await asyncio.wait_for(ws.recv(), WAIT))
    hub.received.append(invocation)
    assert invocation.endswith("\x1e") and invocation.count("\x1e") == 1
    hub.invocation = json.loads(invocation[:-1])


async def drain(ws: ServerConnection, hub: Hub) -> None:
    """Record what else the client sends until it closes the socket."""
    with contextlib.suppress(Exception):
        async for frame in ws:
            hub.received.append(str(frame))


@contextlib.asynccontextmanager
async def chathub(script: Script, **serve_options: Any) -> AsyncIterator[Hub]:
    hub = Hub()

    async def handler(ws: ServerConnection) -> None:
        hub.path = ws.request.path if ws.request else ""
        hub.headers = ws.request.headers if ws.request else None
        try:
            await script(ws, hub)
            await drain(ws, hub)
        finally:
            await ws.wait_closed()
            hub.close_code = ws.close_code
            hub.closed.set()

    async with serve(handler, "127.0.0.1", 0, ping_interval=None, **serve_options) as server:
        port = server.sockets[0].getsockname()[1]
        hub.url = f"ws://127.0.0.1:{port}/sydney/ChatHub"
        yield hub


def endpoints(hub_url: str = "ws://127.0.0.1:9/sydney/ChatHub") -> BingEndpoints:
    return BingEndpoints(create_url="https://bing.test/create", chathub_url=hub_url, base_url="https://www.bing.test")


async def collect(hub: Hub, *, read_timeout: float = 30.0, conversation: Conversation = CONVERSATION) -> list[TurnItem]:
    items: list[TurnItem] = []
    async for item in chat(
        endpoints(hub.url),
        conversation,
        COOKIES,
        INVOCATION,
        proxy=None,
        reader=TurnReader("https://www.bing.test"),
        read_timeout=read_timeout,
    ):
        items.append(item)
    return items


async def test_happy_path_over_a_real_socket() -> None:
    async def script(ws: ServerConnection, hub: Hub) -> None:
        await opening(ws, hub)
        for frame in (THROTTLING, HEL, HELLO, FINAL):  # type:2 and type:3 share one frame
            await ws.send(frame)

    async with chathub(script) as hub:
        items = await collect(hub)
        await asyncio.wait_for(hub.closed.wait(), WAIT)
    assert items == HAPPY_ITEMS
    assert hub.invocation == INVOCATION
    assert hub.close_code == 1000  # closed by the client, cleanly, once the turn ended
    # the token is QueryEscape'd: + / = all percent-encoded
    assert hub.path == "/sydney/ChatHub?sec_access_token=enc%2Brypted%2Fsig%3D%3D"
    assert hub.headers is not None
    assert hub.headers["Cookie"] == f"_U={COOKIE_SECRET}; MUID=m1"
    assert hub.headers["User-Agent"].endswith("Edg/113.0.1774.50")
    assert re.fullmatch(r"[0-9a-f]{64}", hub.headers["sec-ms-gec"])
    assert re.fullmatch(r"1\.0\.0\.\d{1,3}", hub.headers["x-forwarded-for"])
    assert hub.headers["Referer"] == "https://www.bing.com/search?q=Bing+AI&showconv=1"
    assert len(hub.received) == 3  # handshake, one ping, the invocation: no ping storm


async def test_no_token_no_query_and_several_records_after_the_handshake_reply() -> None:
    async def script(ws: ServerConnection, hub: Hub) -> None:
        await ws.recv()
        await ws.send("{}\x1e" + THROTTLING + HEL)  # batched with the handshake reply
        await ws.recv()
        await ws.recv()
        await ws.send(HELLO + FINAL)

    async with chathub(script) as hub:
        items = await collect(hub, conversation=Conversation("C", "P", None, "", None))
    assert items == HAPPY_ITEMS
    assert hub.path == "/sydney/ChatHub"


async def test_a_server_that_skips_the_handshake_reply_loses_nothing() -> None:
    async def script(ws: ServerConnection, hub: Hub) -> None:
        await ws.recv()
        await ws.send(HEL)  # no `{}`: the first record is already the turn's
        await ws.recv()
        await ws.recv()
        await ws.send(HELLO + FINAL)

    async with chathub(script) as hub:
        assert await collect(hub) == HAPPY_ITEMS


@pytest.mark.parametrize(("code", "hint"), [(1000, True), (1011, False)])
async def test_a_close_before_the_result_is_chat_closed(code: int, hint: bool) -> None:
    async def script(ws: ServerConnection, hub: Hub) -> None:
        await opening(ws, hub)
        await ws.send(HEL)
        await ws.close(code, "bye")

    async with chathub(script) as hub:
        with pytest.raises(ChatClosed) as caught:
            await collect(hub)
    assert caught.value.code == code
    assert ("chat context is too long" in str(caught.value)) is hint


async def test_a_dropped_connection_is_chat_closed_without_code() -> None:
    async def script(ws: ServerConnection, hub: Hub) -> None:
        await opening(ws, hub)
        await ws.send(HEL)
        ws.transport.abort()

    async with chathub(script) as hub:
        with pytest.raises(ChatClosed) as caught:
            await collect(hub)
    assert caught.value.code is None


async def test_silence_is_a_chat_timeout_and_the_socket_is_closed() -> None:
    async def script(ws: ServerConnection, hub: Hub) -> None:
        await opening(ws, hub)
        await ws.send(HEL)  # then nothing

    async with chathub(script) as hub:
        with pytest.raises(ChatTimeout) as caught:
            await collect(hub, read_timeout=0.3)
        await asyncio.wait_for(hub.closed.wait(), WAIT)
    assert isinstance(caught.value, asyncio.TimeoutError)
    assert hub.close_code == 1000


async def test_a_refused_upgrade_is_chat_refused_with_its_status() -> None:
    def refuse(connection: ServerConnection, request: Request) -> Response:
        return connection.respond(HTTPStatus.FORBIDDEN, "Forbidden\n")

    async def script(ws: ServerConnection, hub: Hub) -> None:  # pragma: no cover - never upgraded
        raise AssertionError

    async with chathub(script, process_request=refuse) as hub:
        with pytest.raises(ChatRefused) as caught:
            await collect(hub)
    assert caught.value.status == 403
    assert TOKEN not in str(caught.value) and "enc%2Brypted" not in str(caught.value)


async def test_nothing_listening_is_bing_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    hub = Hub(url=f"ws://127.0.0.1:{port}/sydney/ChatHub")
    with pytest.raises(BingUnavailable) as caught:
        await collect(hub)
    assert "enc%2Brypted" not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


async def test_malformed_frame_raises_and_closes() -> None:
    async def script(ws: ServerConnection, hub: Hub) -> None:
        await opening(ws, hub)
        await ws.send('{"type":1,\x1e')

    async with chathub(script) as hub:
        with pytest.raises(MalformedFrame):
            await collect(hub)
        await asyncio.wait_for(hub.closed.wait(), WAIT)


async def test_type_7_ends_the_turn_as_closed() -> None:
    async def script(ws: ServerConnection, hub: Hub) -> None:
        await opening(ws, hub)
        await ws.send(HEL)
        await ws.send('{"type":7,"error":"Connection closed with an error.","allowReconnect":true}\x1e')

    async with chathub(script) as hub:
        items = await collect(hub)
        await asyncio.wait_for(hub.closed.wait(), WAIT)
    assert items == [SydneyEvent("message", "Hel"), TurnFailed("Closed", "Connection closed with an error.")]


async def test_the_consumer_stopping_early_closes_the_socket() -> None:
    async def script(ws: ServerConnection, hub: Hub) -> None:
        await opening(ws, hub)
        await ws.send(HEL)  # and keep the turn open

    async with chathub(script) as hub:
        items = chat(endpoints(hub.url), CONVERSATION, COOKIES, INVOCATION, proxy=None, reader=TurnReader("x"))
        async with contextlib.aclosing(items):
            async for item in items:
                assert item == SydneyEvent("message", "Hel")
                break
        await asyncio.wait_for(hub.closed.wait(), WAIT)
    assert hub.close_code == 1000


async def test_server_pings_are_answered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client, "PING_ANSWER_GAP", 0.0)

    async def script(ws: ServerConnection, hub: Hub) -> None:
        await opening(ws, hub)
        await ws.send('{"type":6}\x1e')
        answer = await asyncio.wait_for(ws.recv(), WAIT)
        assert answer == '{"type":6}\x1e'
        await ws.send(HEL)
        await ws.send(HELLO)
        await ws.send(FINAL)

    async with chathub(script) as hub:
        assert await collect(hub) == HAPPY_ITEMS


async def test_a_ping_after_a_message_once_the_interval_has_passed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client, "PING_INTERVAL", 0.0)

    async def script(ws: ServerConnection, hub: Hub) -> None:
        await opening(ws, hub)
        await ws.send(HEL)
        assert await asyncio.wait_for(ws.recv(), WAIT) == '{"type":6}\x1e'
        await ws.send(HELLO)
        assert await asyncio.wait_for(ws.recv(), WAIT) == '{"type":6}\x1e'
        await ws.send(FINAL)

    async with chathub(script) as hub:
        assert await collect(hub) == HAPPY_ITEMS


async def test_server_pings_right_after_our_own_are_not_echoed() -> None:
    async def script(ws: ServerConnection, hub: Hub) -> None:
        await opening(ws, hub)
        await ws.send('{"type":6}\x1e{"type":6}\x1e')  # e.g. the echo of our ping
        await ws.send(HEL + HELLO + FINAL)

    async with chathub(script) as hub:
        assert await collect(hub) == HAPPY_ITEMS
        await asyncio.wait_for(hub.closed.wait(), WAIT)
    assert hub.received.count('{"type":6}\x1e') == 1


# --- conversation/create and kblob over an httpx MockTransport ---------------------------------

CREATE_BODY = (
    b'{"conversationId":"51D|BingProd|C","clientId":"914800962251629","result":{"value":"Success","message":null}}'
)


def http(handler: Callable[[httpx.Request], httpx.Response]) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


async def test_create_sends_accept_and_cookie_and_merges_set_cookie() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200,
            headers=[
                ("X-Sydney-Encryptedconversationsignature", TOKEN),
                ("X-Sydney-Conversationsignature", "bearer-secret"),
                ("Set-Cookie", "MUID=m2; domain=.bing.test; path=/"),
                ("Set-Cookie", "_EDGE_S=F=1&SID=2; path=/; httponly"),
            ],
            content=CREATE_BODY,
        )

    async with http(handler) as session:
        conversation, cookies = await create_conversation(session, endpoints(), COOKIES)
    assert conversation == CONVERSATION
    assert cookies == {"_U": COOKIE_SECRET, "MUID": "m2", "_EDGE_S": "F=1&SID=2"}
    assert COOKIES["MUID"] == "m1"
    [request] = seen
    assert (request.method, str(request.url)) == ("GET", "https://bing.test/create")
    assert request.headers["Accept"] == "application/json"
    assert request.headers["Cookie"] == f"_U={COOKIE_SECRET}; MUID=m1"


async def test_one_accounts_set_cookie_never_reaches_another_request() -> None:
    cookie_headers: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        cookie_headers.append(request.headers.get("Cookie"))
        body = b'{"blobId":"B"}' if request.url.path == "/images/kblob" else CREATE_BODY
        return httpx.Response(200, headers=[("Set-Cookie", "_U=account-a; domain=.bing.test; path=/")], content=body)

    async with http(handler) as session:
        await create_conversation(session, endpoints(), {"_U": "a"})
        await create_conversation(session, endpoints(), {})  # anonymous, on the same client
        await upload_image(session, endpoints(), b"img", cookies=None)
    assert cookie_headers == ["_U=a", "", ""]


@pytest.mark.parametrize(
    ("status", "body", "value"),
    [
        (401, b"", "HTTP 401"),
        (200, b'{"result":{"value":"UnauthorizedRequest","message":"no"}}', "UnauthorizedRequest"),
        (200, b"<html>", "Malformed"),
    ],
)
async def test_create_failures(status: int, body: bytes, value: str) -> None:
    async with http(lambda request: httpx.Response(status, content=body)) as session:
        with pytest.raises(CreateFailed) as caught:
            await create_conversation(session, endpoints(), COOKIES)
    assert (caught.value.status, caught.value.value) == (status, value)
    assert COOKIE_SECRET not in str(caught.value)


async def test_create_transport_error_is_bing_unavailable_without_secrets() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"boom {request.headers['Cookie']}", request=request)

    async with http(handler) as session:
        with pytest.raises(BingUnavailable) as caught:
            await create_conversation(session, endpoints(), COOKIES)
    assert COOKIE_SECRET not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def form_fields(request: httpx.Request) -> dict[str, str]:
    """The multipart form, parsed by hand: text fields only, no filenames, no part Content-Type."""
    match = re.fullmatch(r"multipart/form-data; boundary=(\S+)", request.headers["Content-Type"])
    assert match
    boundary = match.group(1).encode()
    body = request.content
    assert body.endswith(b"--" + boundary + b"--\r\n")
    fields = {}
    for part in body.split(b"--" + boundary)[1:-1]:
        head, _, value = part.strip(b"\r\n").partition(b"\r\n\r\n")
        name = re.fullmatch(rb'Content-Disposition: form-data; name="(\w+)"', head)
        assert name, head
        fields[name.group(1).decode()] = value.decode()
    return fields


async def test_upload_image_sends_the_two_text_fields_and_returns_the_blob_url() -> None:
    image = bytes(range(256)) * 3
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"blobId": "BLOB1", "processedBlobId": "P1"})

    async with http(handler) as session:
        url = await upload_image(session, endpoints(), image, cookies=COOKIES, tone="Precise")
    assert url == "https://www.bing.test/images/blob?bcid=BLOB1"
    [request] = seen
    assert (request.method, str(request.url)) == ("POST", "https://www.bing.test/images/kblob")
    assert request.headers["Referer"] == "https://www.bing.com/search?q=Bing+AI&showconv=1&FORM=hpcodx"
    assert request.headers["Cookie"] == f"_U={COOKIE_SECRET}; MUID=m1"
    fields = form_fields(request)
    assert list(fields) == ["knowledgeRequest", "imageBase64"]
    assert base64.b64decode(fields["imageBase64"], validate=True) == image
    assert json.loads(fields["knowledgeRequest"]) == {
        "imageInfo": {},
        "knowledgeRequest": {
            "invokedSkills": ["ImageById"],
            "subscriptionId": "Bing.Chat.Multimodal",
            "invokedSkillsRequestData": {"enableFaceBlur": False},
            "convoData": {"convoid": "", "convotone": "Precise"},
        },
    }


@pytest.mark.parametrize("body", [{"blobId": "", "processedBlobId": ""}, {"processedBlobId": "x"}])
async def test_empty_blob_id_is_rejected(body: dict[str, str]) -> None:
    async with http(lambda request: httpx.Response(200, json=body)) as session:
        with pytest.raises(UploadRejected):
            await upload_image(session, endpoints(), b"img", cookies=None)


@pytest.mark.parametrize(("status", "body"), [(500, b"oops"), (200, b"<html>")])
async def test_upload_failure_carries_the_status(status: int, body: bytes) -> None:
    async with http(lambda request: httpx.Response(status, content=body)) as session:
        with pytest.raises(BingUnavailable) as caught:
            await upload_image(session, endpoints(), b"img", cookies=COOKIES)
    assert caught.value.status == status


def test_endpoint_urls() -> None:
    ends = BingEndpoints("https://c.test/create", "wss://s.test/sydney/ChatHub", "https://b.test/")
    assert ends.kblob_url == "https://b.test/images/kblob"
    assert ends.blob_url("X1") == "https://b.test/images/blob?bcid=X1"
