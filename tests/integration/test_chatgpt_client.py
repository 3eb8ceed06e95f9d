"""The ChatGPT web HTTP client against a test-local upstream: a raw ASGI app written here from the
fact sheet (§1.3, §2, §3), served by uvicorn on 127.0.0.1. Statuses mapped, headers sent, chunks
streamed as they come, an early close reaching the server, the session refresh (Set-Cookie
rotation included), proxies, and no secret in any error."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import orjson
import pytest
import uvicorn

from libs.account_pool.outcome import Verdict
from libs.errors import InvalidRequest, UpstreamAuthError, UpstreamRateLimited, UpstreamTimeout
from services.chatgpt_web_worker import client as client_module
from services.chatgpt_web_worker.client import DEFAULT_USER_AGENT, SESSION_COOKIE, Session, WebClient, classify_reply
from services.chatgpt_web_worker.request import conversation_body, user_message
from services.chatgpt_web_worker.stream import ConversationStream, Done, Text
from services.chatgpt_web_worker.upstream_errors import UpstreamFailure


def _jwt(claims: dict[str, Any]) -> str:
    def part(obj: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(obj)).rstrip(b"=").decode()
    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJlLW5vdC1jaGVja2Vk"


ACCESS = _jwt({"exp": 4102444800, "sub": "user-test", "https://api.openai.com/auth": {"user_id": "user-1"}})
FRESH = _jwt({"exp": 4102448400, "sub": "user-test"})
SESSION = "Xq7v0Lr2Nw9sKd4Pb8Tz1Hc6Mf3Yg5Ja"  # cookie-like; no credential pattern matches it
ROTATED = "Rt5Wm8Qa2Zk7Lp0Vx3Nc9Bd4Hs6Jf1Gy"
DEVICE = "7d3f1c2a-5b6e-4f70-8a9b-0c1d2e3f4a5b"
SLUG = "text-davinci-002-render-sha"

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def _event(mid: str, text: str, *, end: bool = False) -> bytes:
    message: dict[str, Any] = {"id": mid, "author": {"role": "assistant", "name": None, "metadata": {}},
               "content": {"content_type": "text", "parts": [text]},
               "status": "finished_successfully" if end else "in_progress", "end_turn": True if end else None,
               "metadata": {"message_type": "next", "model_slug": SLUG,
                            **({"finish_details": {"type": "stop", "stop": "<|diff_marker|>"}} if end else {})},
               "recipient": "all"}
    return b"data: " + orjson.dumps({"message": message, "conversation_id": "c-1", "error": None}) + b"\n\n"


CLOUDFLARE_PAGE = (b"<!DOCTYPE html><html><head><title>Just a moment...</title></head>"
                   b"<body><div id=\"cf-please-wait\"></div></body></html>")


@dataclass
class Upstream:
    """The fake's state, shared with the test (the server runs on the test's event loop)."""

    seen: list[tuple[int, str, str, dict[str, str], bytes]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)  # lets a paused stream go on
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)  # the client closed mid-answer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        path, method = scope["path"], scope["method"]
        self.seen.append((scope["server"][1], method, path, headers, body))
        if path == "/backend-api/conversation" and method == "POST":
            await self._conversation(orjson.loads(body), receive, send)
        elif path == "/api/auth/session":
            await self._session(headers.get("cookie", ""), send)
        elif path.startswith("/backend-api/"):
            await self._manage(method, path[len("/backend-api"):], scope["query_string"].decode(), headers, send)
        else:
            await _answer(send, 404, b'{"detail": "Not Found"}')

    async def _conversation(self, body: dict[str, Any], receive: Receive, send: Send) -> None:
        scenario = body["messages"][0]["content"]["parts"][0]
        if scenario == "expired":
            await _answer(send, 401, orjson.dumps({"detail": {
                "message": "Your authentication token has expired. Please try signing in again.",
                "type": "invalid_request_error", "param": None, "code": "token_expired"}}))
        elif scenario == "echo-token":  # an upstream that quotes what it got
            token = dict(self.seen[-1][3])["authorization"].removeprefix("Bearer ")
            await _answer(send, 401, orjson.dumps({"detail": f"token {token} is not valid"}))
        elif scenario == "cloudflare":
            await _answer(send, 403, CLOUDFLARE_PAGE, "text/html; charset=UTF-8")
        elif scenario == "capped":
            await _answer(send, 429, orjson.dumps({"detail": {
                "message": "You have sent too many messages to the model. Please try again later.",
                "code": "model_cap_exceeded", "clears_in": 11461}}))
        elif scenario == "crash":
            await _answer(send, 500, b"Internal Server Error", "text/plain")
        elif scenario == "stall":  # the head, then nothing
            await _start(send, 200, "text/event-stream")
            await self.release.wait()
            await send({"type": "http.response.body", "body": b""})
        else:
            # "Hello! How can I help" in events; "paused" waits for the test between them, then
            # (when the test has gone) waits to see the disconnect
            await _start(send, 200, "text/event-stream")
            texts = ["Hello", "Hello! How", "Hello! How can I help"]
            for i, text in enumerate(texts):
                await send({"type": "http.response.body", "body": _event("a-1", text), "more_body": True})
                if scenario == "paused" and i == 0:
                    message = await receive()  # nothing more to read: this returns when the client leaves
                    if message["type"] == "http.disconnect":
                        self.disconnected.set()
                        return
            await send({"type": "http.response.body", "body": _event("a-1", texts[-1], end=True), "more_body": True})
            await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})

    async def _session(self, cookie: str, send: Send) -> None:
        value = cookie.removeprefix(f"{SESSION_COOKIE}=")
        session = {"user": {"id": "user-abc", "email": "a@b.c"}, "expires": "2030-08-01T23:45:12.345Z",
                   "accessToken": FRESH, "authProvider": "auth0"}
        if value == SESSION:
            await _answer(send, 200, orjson.dumps(session), extra=[
                (b"set-cookie", f"{SESSION_COOKIE}={ROTATED}; Path=/; HttpOnly; Secure; SameSite=Lax".encode()),
                (b"set-cookie", b"__cf_bm=abc; Path=/")])
        elif value == "chunked-session-cookie":
            await _answer(send, 200, orjson.dumps(session), extra=[
                (b"set-cookie", f"{SESSION_COOKIE}.1={ROTATED[16:]}; Path=/; Secure".encode()),
                (b"set-cookie", f"{SESSION_COOKIE}.0={ROTATED[:16]}; Path=/; Secure".encode())])
        elif value == "steady-session-cookie":
            await _answer(send, 200, orjson.dumps(session))
        elif value == "gone-session-cookie":
            await _answer(send, 200, b"{}")
        elif value == "refresh-error-cookie":
            await _answer(send, 200, orjson.dumps({"error": "RefreshAccessTokenError", "expires": "2030-01-01"}))
        elif value == "cloudflare-cookie":
            await _answer(send, 403, CLOUDFLARE_PAGE, "text/html")
        elif value == "limited-cookie":
            await _answer(send, 429, b'{"detail": "Too many requests"}')
        else:  # an upstream that quotes the cookie it refused
            await _answer(send, 403, orjson.dumps({"detail": f"bad cookie {value}"}))

    async def _manage(self, method: str, path: str, query: str, headers: dict[str, str], send: Send) -> None:
        if method == "GET" and path == "/conversations":
            args = {k: v[0] for k, v in parse_qs(query).items()}
            await _answer(send, 200, orjson.dumps({"items": [{"id": "c-1", "title": "Greeting"}], "total": 1,
                                                   "limit": int(args["limit"]), "offset": int(args["offset"]),
                                                   "has_missing_conversations": False}))
        elif method == "GET" and path.startswith("/conversation/"):
            await _answer(send, 404, orjson.dumps({"detail": f"Can't load conversation {path.rsplit('/', 1)[1]}"}))
        elif method == "POST" and path.startswith("/conversation/gen_title/"):
            await _answer(send, 200, b'{"title": "Greeting"}')
        elif method == "GET" and path == "/models":
            await _answer(send, 200, orjson.dumps({"models": [{"slug": SLUG}], "categories": []}))
        elif path == "/cloudflare":
            await _answer(send, 403, CLOUDFLARE_PAGE, "text/html")
        elif path == "/plain":
            await _answer(send, 200, b"service is ready", "text/plain")
        elif path == "/big":
            await _answer(send, 200, b"[" + b"1," * 4096 + b"1]")
        else:
            await _answer(send, 404, b'{"detail": "Not Found"}')


async def _start(send: Send, status: int, content_type: str,
                 extra: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type.encode()), *(extra or [])]})


async def _answer(send: Send, status: int, body: bytes, content_type: str = "application/json",
                  extra: list[tuple[bytes, bytes]] | None = None) -> None:
    await _start(send, status, content_type, extra)
    await send({"type": "http.response.body", "body": body})


@contextlib.asynccontextmanager
async def _serve(app: Upstream) -> AsyncIterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(500):
            if server.started:
                break
            await asyncio.sleep(0.01)
        assert server.started
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        app.release.set()
        server.should_exit = True
        await task
        sock.close()


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[Upstream, str]]:
    app = Upstream()
    async with _serve(app) as base:
        yield app, base


@pytest.fixture(params=["lean", "httpx"])
async def web(upstream: tuple[Upstream, str], request: pytest.FixtureRequest) -> AsyncIterator[WebClient]:
    """Both transports of a turn: a plain-HTTP base goes through libs/http1.py, TLS or a proxy
    through httpx (forced here with lean_http=False)."""
    client = WebClient(upstream[1], connect_timeout=5.0, read_timeout=10.0, lean_http=request.param == "lean")
    try:
        yield client
    finally:
        await client.aclose()


def _body(text: str) -> dict[str, Any]:
    return conversation_body(action="next", messages=[user_message(text)], parent_message_id="p-1",
                             conversation_id=None, model="gpt-4o")


async def _failure(web: WebClient, text: str) -> UpstreamFailure:
    with pytest.raises(UpstreamFailure) as caught:
        async with web.stream_conversation(ACCESS, _body(text), proxy=None, device_id=DEVICE):
            pytest.fail("a failed call must raise before its body")
    return caught.value


def _texts(failure: UpstreamFailure) -> str:
    return " ".join([str(failure), repr(failure), failure.error.message, orjson.dumps(failure.error.to_wire()).decode(),
                     orjson.dumps(failure.body).decode(), failure.outcome.reason])


# ---- the conversation stream -----------------------------------------------------------------


async def test_streams_chunks_with_the_sheet_headers(upstream: tuple[Upstream, str], web: WebClient) -> None:
    app, _ = upstream
    parser = ConversationStream()
    events = []
    async with web.stream_conversation(ACCESS, _body("hi"), proxy=None, device_id=DEVICE) as chunks:
        async for chunk in chunks:
            events += parser.feed(chunk)
    events += parser.close()
    assert "".join(e.delta for e in events if isinstance(e, Text)) == "Hello! How can I help"
    assert events[-1] == Done()
    _, method, path, headers, raw = app.seen[-1]
    assert (method, path) == ("POST", "/backend-api/conversation")
    assert headers["authorization"] == f"Bearer {ACCESS}"
    assert headers["accept"] == "text/event-stream"
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"] == DEFAULT_USER_AGENT and "Chrome/" in DEFAULT_USER_AGENT
    assert headers["oai-device-id"] == DEVICE and headers["oai-language"] == "en-US"
    assert "cookie" not in headers
    assert orjson.loads(raw)["messages"][0]["content"]["parts"] == ["hi"]


@pytest.mark.parametrize("suffix", ["/backend-api", "/backend-api/", "/"])
async def test_the_base_may_end_at_backend_api(upstream: tuple[Upstream, str], suffix: str) -> None:
    app, base = upstream
    web = WebClient(base + suffix, connect_timeout=5.0, read_timeout=10.0)
    try:
        async with web.stream_conversation(ACCESS, _body("hi"), proxy=None, device_id=DEVICE) as chunks:
            async for _ in chunks:
                pass
        assert (await web.call(ACCESS, "GET", "/models", proxy=None))[0] == 200
        await web.refresh(SESSION, proxy=None)
    finally:
        await web.aclose()
    assert [path for _, _, path, _, _ in app.seen] == [
        "/backend-api/conversation", "/backend-api/models", "/api/auth/session"]


async def test_chunks_arrive_as_sent_and_leaving_early_closes_the_connection(
        upstream: tuple[Upstream, str], web: WebClient) -> None:
    app, _ = upstream
    async with web.stream_conversation(ACCESS, _body("paused"), proxy=None, device_id=DEVICE) as chunks:
        first = await anext(chunks)  # the server is holding the rest: this chunk came on its own
        assert first.startswith(b"data: ") and b'"Hello"' in first
    await asyncio.wait_for(app.disconnected.wait(), 5)


async def test_leaving_before_reading_closes_the_connection(upstream: tuple[Upstream, str], web: WebClient) -> None:
    app, _ = upstream
    async with web.stream_conversation(ACCESS, _body("paused"), proxy=None, device_id=DEVICE):
        pass  # e.g. the client went away as the answer's head came in
    await asyncio.wait_for(app.disconnected.wait(), 5)


async def test_cancelling_the_reader_closes_the_connection(upstream: tuple[Upstream, str], web: WebClient) -> None:
    app, _ = upstream
    got_first = asyncio.Event()

    async def read() -> None:
        async with web.stream_conversation(ACCESS, _body("paused"), proxy=None, device_id=DEVICE) as chunks:
            async for _ in chunks:
                got_first.set()

    task = asyncio.create_task(read())
    await asyncio.wait_for(got_first.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(app.disconnected.wait(), 5)


@pytest.mark.parametrize(("text", "status", "verdict", "error"), [
    ("expired", 401, Verdict.AUTH_EXPIRED, UpstreamAuthError),
    ("cloudflare", 403, Verdict.CLOUDFLARE, None),
    ("capped", 429, Verdict.RATE_LIMITED, UpstreamRateLimited),
    ("crash", 500, Verdict.FAILURE, None),
])
async def test_a_failed_call_raises_classified_before_any_chunk(
        web: WebClient, text: str, status: int, verdict: Verdict, error: type | None) -> None:
    failure = await _failure(web, text)
    assert failure.status == status and failure.outcome.verdict is verdict
    if error is not None:
        assert isinstance(failure.error, error)
    if text == "capped":  # the cap is for the model the body asked for
        assert (failure.outcome.model, failure.outcome.clears_in) == ("gpt-4o", 11461.0)


async def test_the_token_is_scrubbed_from_an_upstream_that_echoes_it(web: WebClient) -> None:
    failure = await _failure(web, "echo-token")
    assert failure.outcome.verdict is Verdict.AUTH_INVALID
    assert ACCESS not in _texts(failure) and "[redacted]" in failure.error.message


@pytest.mark.parametrize("lean", [True, False])
async def test_a_stalled_stream_times_out(upstream: tuple[Upstream, str], lean: bool) -> None:
    web = WebClient(upstream[1], connect_timeout=5.0, read_timeout=0.3, lean_http=lean)
    try:
        with pytest.raises(UpstreamFailure) as caught:
            async with web.stream_conversation(ACCESS, _body("stall"), proxy=None, device_id=DEVICE) as chunks:
                async for _ in chunks:
                    pass
    finally:
        await web.aclose()
    assert isinstance(caught.value.error, UpstreamTimeout)
    assert caught.value.outcome.verdict is Verdict.FAILURE


@pytest.mark.parametrize("lean", [True, False])
async def test_an_unreachable_upstream_is_a_failure(lean: bool) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    try:
        web = WebClient(f"http://127.0.0.1:{sock.getsockname()[1]}", connect_timeout=2.0, read_timeout=2.0,
                        lean_http=lean)
        with pytest.raises(UpstreamFailure) as caught:
            async with web.stream_conversation(ACCESS, _body("hi"), proxy=None, device_id=DEVICE):
                pass
        await web.aclose()
    finally:
        sock.close()
    assert caught.value.status == 502 and caught.value.outcome.verdict is Verdict.FAILURE
    assert "Connect" in caught.value.error.message  # ConnectError (httpx) or ConnectionRefusedError (plain HTTP)


# ---- management calls -------------------------------------------------------------------------


async def test_management_calls_keep_the_upstream_status_and_body(
        upstream: tuple[Upstream, str], web: WebClient) -> None:
    app, _ = upstream
    status, body = await web.call(ACCESS, "GET", "/conversations", query={"offset": 0, "limit": 28}, proxy=None)
    assert status == 200 and body["limit"] == 28 and body["items"][0]["id"] == "c-1"
    headers = app.seen[-1][3]
    assert headers["authorization"] == f"Bearer {ACCESS}" and headers["accept"] == "application/json"

    status, body = await web.call(ACCESS, "POST", "/conversation/gen_title/c-1", json={"message_id": "a-1"},
                                  proxy=None)
    assert (status, body) == (200, {"title": "Greeting"})
    assert orjson.loads(app.seen[-1][4]) == {"message_id": "a-1"}
    assert app.seen[-1][3]["content-type"] == "application/json"

    status, body = await web.call(ACCESS, "GET", "/conversation/c-gone", proxy=None)  # a 4xx is returned
    assert (status, body) == (404, {"detail": "Can't load conversation c-gone"})
    assert classify_reply(status, body, model=None, secrets=[ACCESS]).outcome.verdict is Verdict.NEUTRAL

    assert await web.call(ACCESS, "GET", "/plain", proxy=None) == (200, "service is ready")


async def test_a_challenge_page_from_a_management_call_classifies_again(web: WebClient) -> None:
    status, body = await web.call(ACCESS, "GET", "/cloudflare", proxy=None)
    assert status == 403 and isinstance(body, dict) and "<html" not in orjson.dumps(body).decode()
    assert classify_reply(status, body, model=None, secrets=[ACCESS]).outcome.verdict is Verdict.CLOUDFLARE


@pytest.mark.parametrize("path", ["/conversation/../models", "/conversation/%2e%2e/x", "/models?x=1", "models",
                                  "/conversation/a b", "//evil.example/x", "/conversation/"])
async def test_paths_other_than_plain_management_paths_are_refused(
        upstream: tuple[Upstream, str], web: WebClient, path: str) -> None:
    with pytest.raises(InvalidRequest):
        await web.call(ACCESS, "GET", path, proxy=None)
    assert upstream[0].seen == []


async def test_an_oversized_answer_is_refused(web: WebClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client_module, "_MAX_BODY", 1024)
    with pytest.raises(UpstreamFailure) as caught:
        await web.call(ACCESS, "GET", "/big", proxy=None)
    assert caught.value.error.code == "upstream_too_large" and caught.value.outcome.verdict is Verdict.NEUTRAL


async def test_a_proxy_is_used_per_call() -> None:
    target, proxy = Upstream(), Upstream()
    async with _serve(target) as base, _serve(proxy) as proxy_url:
        web = WebClient(base, connect_timeout=5.0, read_timeout=10.0)
        try:
            assert (await web.call(ACCESS, "GET", "/models", proxy=proxy_url))[0] == 200
            assert (await web.call(ACCESS, "GET", "/models", proxy=None))[0] == 200
        finally:
            await web.aclose()
    assert [(path, headers["host"]) for _, _, path, headers, _ in proxy.seen] == [
        ("/backend-api/models", base.removeprefix("http://"))]  # forwarded to the proxy, for the target
    assert len(target.seen) == 1  # the call without a proxy went straight


async def test_a_proxy_that_cannot_be_used_fails_without_showing_its_url(web: WebClient) -> None:
    # without httpx's `socksio` extra a SOCKS proxy cannot be used at all; with it, nothing listens there
    proxy = "socks5://proxyuser:Pw7Kq2Zm9Xc4Lv@127.0.0.1:1"
    with pytest.raises(UpstreamFailure) as caught:
        await web.call(ACCESS, "GET", "/models", proxy=proxy)
    assert caught.value.outcome.verdict is Verdict.FAILURE
    assert "Pw7Kq2Zm9Xc4Lv" not in _texts(caught.value)


# ---- session refresh --------------------------------------------------------------------------


async def test_refresh_reads_the_token_and_the_rotated_cookie(upstream: tuple[Upstream, str], web: WebClient) -> None:
    app, _ = upstream
    session = await web.refresh(SESSION, proxy=None)
    assert session == Session(FRESH, "2030-08-01T23:45:12.345Z", ROTATED)
    assert FRESH not in repr(session) and ROTATED not in repr(session)
    _, method, path, headers, _ = app.seen[-1]
    assert (method, path) == ("GET", "/api/auth/session")
    assert headers["cookie"] == f"{SESSION_COOKIE}={SESSION}" and "authorization" not in headers

    # cookies the answer set are not kept for the next call (it may be another account's)
    await web.call(ACCESS, "GET", "/models", proxy=None)
    assert "cookie" not in app.seen[-1][3]


async def test_refresh_joins_a_chunked_cookie_and_reports_no_rotation(web: WebClient) -> None:
    assert (await web.refresh("chunked-session-cookie", proxy=None)).session_token == ROTATED
    assert (await web.refresh("steady-session-cookie", proxy=None)).session_token is None


@pytest.mark.parametrize(("cookie", "verdict"), [
    ("gone-session-cookie", Verdict.AUTH_INVALID),
    ("refresh-error-cookie", Verdict.AUTH_INVALID),
    ("cloudflare-cookie", Verdict.CLOUDFLARE),
    ("limited-cookie", Verdict.RATE_LIMITED),
])
async def test_refresh_failures(web: WebClient, cookie: str, verdict: Verdict) -> None:
    with pytest.raises(UpstreamFailure) as caught:
        await web.refresh(cookie, proxy=None)
    assert caught.value.outcome.verdict is verdict
    if verdict is Verdict.AUTH_INVALID:
        assert "session expired or revoked" in caught.value.outcome.reason
        assert isinstance(caught.value.error, UpstreamAuthError)


async def test_refresh_scrubs_the_cookie_an_upstream_echoes(web: WebClient) -> None:
    cookie = "Zp4Kc9Wq2Lm7Xv0Bn5Hd8Jt3Gf6Sa1Ry"
    with pytest.raises(UpstreamFailure) as caught:
        await web.refresh(cookie, proxy=None)
    assert caught.value.outcome.verdict is Verdict.AUTH_INVALID
    assert cookie not in _texts(caught.value) and "[redacted]" in caught.value.error.message


def test_token_expiry_is_read_without_verifying() -> None:
    assert WebClient.token_expiry(ACCESS) == 4102444800.0
    assert WebClient.token_expiry(_jwt({"exp": 1.5})) == 1.5
    for bad in ["not-a-jwt", "a.b.c", _jwt({"sub": "x"}), _jwt({"exp": "soon"}), _jwt({"exp": True}), "a.!!!.c"]:
        assert WebClient.token_expiry(bad) is None
