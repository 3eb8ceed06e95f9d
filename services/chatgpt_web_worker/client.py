"""HTTP calls to the ChatGPT web upstream (fact sheet `chatgpt-web.md` §1-3): the conversation
stream, the management endpoints under backend-api, and the session refresh.

httpx, one AsyncClient per distinct proxy (accounts may each have their own). The caller resolves
the proxy (an account's own, else GO_CHATGPT_API_PROXY / HTTPS_PROXY / HTTP_PROXY, e.g. with
`libs.openai_upstream.call.proxy_for_url`), so `trust_env` stays off. The clients keep no cookies:
a cookie one account's answer sets must never ride along with another account's request.

Tokens are the caller's, per call; they go in headers only, are never logged, and every text
built from an upstream answer is scrubbed of them (upstream_errors.py). Foreign exceptions become
`UpstreamFailure` here, by class name only (an httpx message may quote a URL).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import math
import re
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from libs import secrets as held_secrets
from libs.account_pool.outcome import Outcome, Verdict
from libs.errors import InvalidRequest, UpstreamAuthError, UpstreamTooLarge
from libs.http1 import ACCEPT_ENCODING, HTTP1Pool, InvalidHeader, ProtocolError
from services.chatgpt_web_worker.upstream_errors import UpstreamFailure, classify, is_cloudflare, scrub, unreachable

DEFAULT_USER_AGENT = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                      "Chrome/124.0.0.0 Safari/537.36")
SESSION_COOKIE = "__Secure-next-auth.session-token"

_MAX_ERROR_BODY = 64 * 1024  # what is read of a failed answer: enough for any JSON detail or a page title
_MAX_BODY = 32 * 1024 * 1024  # a management answer (a long conversation's tree) larger than this is refused
# Management paths are fixed words and UUID-like ids: anything else (dot segments, escapes, a
# query) is refused before it could reach another path of the upstream. A segment never starts
# with a dot, so `.` and `..` are not segments.
_PATH = re.compile(r"(/[A-Za-z0-9_-][A-Za-z0-9._-]*)+")


@dataclass(frozen=True, slots=True)
class Session:
    """A refreshed session. Tokens are left out of the repr: a logged Session shows no secret."""

    access_token: str = field(repr=False)
    expires: str | None  # the session's own expiry (ISO-8601), as the upstream said it
    session_token: str | None = field(repr=False)  # the rotated cookie, when the upstream set one


class WebClient:
    def __init__(self, base_url: str, *, connect_timeout: float, read_timeout: float,
                 user_agent: str = DEFAULT_USER_AGENT, lean_http: bool = True) -> None:
        # The base may end at the site (`https://chatgpt.com`) or at its API (`…/backend-api`).
        base = base_url.rstrip("/")
        site = base.removesuffix("/backend-api")
        self.api_base = site + "/backend-api"
        self.session_url = site + "/api/auth/session"
        self._user_agent = user_agent
        self._timeout = httpx.Timeout(read_timeout, connect=connect_timeout)
        self._clients: dict[str | None, httpx.AsyncClient] = {}
        self._connect_timeout = connect_timeout
        # a plain-HTTP base (an in-cluster mirror, the sandbox) streams turns through the lean
        # HTTP/1.1 client openai-worker uses, at a fraction of httpx's CPU; TLS and proxies stay here
        self._plain = urlsplit(self.api_base) if lean_http and self.api_base.startswith("http://") else None
        self._pool = HTTP1Pool(connect_timeout=connect_timeout) if self._plain is not None else None
        held_secrets.hold_url(base_url)

    def _client(self, proxy: str | None) -> httpx.AsyncClient:
        client = self._clients.get(proxy)
        if client is None:
            held_secrets.hold_url(proxy)  # a proxy's credentials are scrubbed from all text
            try:
                client = httpx.AsyncClient(
                    proxy=proxy, timeout=self._timeout, trust_env=False, follow_redirects=False,
                    # concurrency is bounded by the worker's capacity, not by a pool wait here
                    limits=httpx.Limits(max_connections=None, max_keepalive_connections=32),
                    cookies=CookieJar(DefaultCookiePolicy(allowed_domains=[])),  # keeps no cookie
                    headers={"user-agent": self._user_agent, "oai-language": "en-US"},
                )
            except (ImportError, ValueError, httpx.InvalidURL) as exc:
                # a SOCKS proxy without httpx's `socksio` extra, or a malformed proxy URL; the URL
                # itself stays out of the message (it may hold credentials)
                scheme = proxy.partition("://")[0] if proxy and "://" in proxy else "?"
                raise unreachable(f"the proxy cannot be used ({scheme}: {type(exc).__name__})",
                                  timed_out=False) from None
            self._clients[proxy] = client
        return client

    @contextlib.asynccontextmanager
    async def stream_conversation(self, token: str, body: dict[str, Any], *, proxy: str | None,
                                  device_id: str) -> AsyncIterator[AsyncIterator[bytes]]:
        """`async with client.stream_conversation(...) as chunks: async for chunk in chunks: …`

        Entering raises `UpstreamFailure` (classified) on a non-200 answer or no answer; the
        chunks are the raw body as it arrives (feed them to stream.ConversationStream). Leaving
        the block, early or cancelled, closes the upstream connection: that stops the answer.
        """
        headers = {
            "authorization": f"Bearer {token}",
            "accept": "text/event-stream",
            "content-type": "application/json",
            "oai-device-id": device_id,
        }
        if proxy is None and self._pool is not None:
            async with self._plain_conversation(token, body, headers) as chunks:
                yield chunks
            return
        client = self._client(proxy)
        request = client.build_request("POST", self.api_base + "/conversation", content=orjson.dumps(body),
                                       headers=headers)
        response = await _send(client, request)
        try:
            if response.status_code != 200:
                raw = await _read(response, _MAX_ERROR_BODY, truncate=True)
                model = body.get("model")
                raise classify(response.status_code, raw, response.headers.get("content-type"),
                               model=model if isinstance(model, str) else None, secrets=(token,))
            async with contextlib.aclosing(_chunks(response)) as chunks:
                yield chunks
        finally:
            await response.aclose()

    @contextlib.asynccontextmanager
    async def _plain_conversation(self, token: str, body: dict[str, Any],
                                  headers: dict[str, str]) -> AsyncIterator[AsyncIterator[bytes]]:
        assert self._pool is not None and self._plain is not None
        headers = {**headers, "user-agent": self._user_agent, "oai-language": "en-US",
                   "accept-encoding": ACCEPT_ENCODING}
        answered = False
        try:
            async with self._pool.post(self._plain.hostname or "", self._plain.port or 80,
                                       self._plain.path + "/conversation", headers, orjson.dumps(body),
                                       head_timeout=self._timeout.read) as response:
                answered = True
                if response.status != 200:
                    raw = await response.read(_MAX_ERROR_BODY)
                    model = body.get("model")
                    raise classify(response.status, raw, response.headers.get("content-type"),
                                   model=model if isinstance(model, str) else None, secrets=(token,))
                async with contextlib.aclosing(_timed(response.body(), self._timeout.read)) as chunks:
                    yield chunks
        except TimeoutError:
            raise unreachable("TimeoutError" if not answered else "TimeoutError while streaming",
                              timed_out=True) from None
        except (OSError, ProtocolError, InvalidHeader) as exc:
            raise unreachable(f"the answer broke off ({type(exc).__name__})" if answered else type(exc).__name__,
                              timed_out=False) from None

    async def call(self, token: str, method: str, path: str, *, query: Mapping[str, Any] | None = None,
                   json: Any = None, proxy: str | None, device_id: str | None = None) -> tuple[int, Any]:
        """One management call under backend-api (`/conversations`, `/conversation/{id}`,
        `/conversation/gen_title/{id}`, `/conversation/message_feedback`, `/models`, …).

        Returns the status and the body: parsed JSON, else text. Non-2xx answers are returned too
        (the native routes answer with them), their body as `classify` gives it (scrubbed JSON, or
        `{"detail": …}` for a page); `classify_reply` tells what such an answer means. Raises
        `UpstreamFailure` only when there is no answer, and InvalidRequest for a path that is not
        a plain management path.
        """
        if not _PATH.fullmatch(path):
            raise InvalidRequest("not a ChatGPT management path", param=None)
        headers = {"authorization": f"Bearer {token}", "accept": "application/json"}
        if json is not None:
            headers["content-type"] = "application/json"
        if device_id is not None:
            headers["oai-device-id"] = device_id
        client = self._client(proxy)
        request = client.build_request(method, self.api_base + path, params=query,
                                       content=orjson.dumps(json) if json is not None else None, headers=headers)
        response = await _send(client, request)
        try:
            ok = 200 <= response.status_code < 300
            raw = await _read(response, _MAX_BODY if ok else _MAX_ERROR_BODY, truncate=not ok)
        finally:
            await response.aclose()
        content_type = response.headers.get("content-type")
        if not ok:
            return response.status_code, classify(response.status_code, raw, content_type, model=None,
                                                  secrets=(token,)).body
        return response.status_code, _parsed(raw, content_type)

    async def refresh(self, session_token: str, *, proxy: str | None) -> Session:
        """A fresh access token from the session cookie (`GET /api/auth/session`), and the cookie's
        rotated value when the upstream set one. `UpstreamFailure` otherwise: AUTH_INVALID when
        the session is gone (`{}`, no accessToken, an `error`, a 401), CLOUDFLARE for a challenge
        page, RATE_LIMITED for a 429, FAILURE for the rest."""
        secrets = (session_token,)
        client = self._client(proxy)
        request = client.build_request("GET", self.session_url, headers={
            "accept": "application/json", "cookie": f"{SESSION_COOKIE}={session_token}"})
        response = await _send(client, request)
        try:
            raw = await _read(response, _MAX_ERROR_BODY, truncate=False)
        finally:
            await response.aclose()
        status, content_type = response.status_code, response.headers.get("content-type")
        if status != 200:
            failure = classify(status, raw, content_type, model=None, secrets=secrets)
            if failure.outcome.verdict is Verdict.AUTH_EXPIRED:  # the session itself is what expired
                raise _session_gone(status, "401 from the session endpoint")
            raise failure
        try:
            session = orjson.loads(raw)
        except orjson.JSONDecodeError:
            session = None
        if not isinstance(session, dict):  # a page where JSON was due: a challenge, or a failure
            raise classify(403 if is_cloudflare(raw) else 502, raw, content_type, model=None, secrets=secrets)
        access_token = session.get("accessToken")
        if session.get("error") or not isinstance(access_token, str) or not access_token:
            error = session.get("error")
            said = scrub(str(error), secrets)[:80] if error else ""
            raise _session_gone(200, f"session expired or revoked ({said})" if said else "")
        expires = session.get("expires")
        return Session(access_token, expires if isinstance(expires, str) else None,
                       _rotated_cookie(response.headers.get_list("set-cookie")))

    @staticmethod
    def token_expiry(token: str) -> float | None:
        """The access token's `exp` (epoch seconds), read without verifying the JWT: for
        refreshing before it runs out. None when the token is not a JWT with a numeric `exp`."""
        return token_expiry(token)

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()


def token_expiry(token: str) -> float | None:
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = orjson.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):  # orjson.JSONDecodeError is a ValueError
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(exp, bool) or not isinstance(exp, int | float) or not math.isfinite(exp):
        return None
    return float(exp)


def classify_reply(status: int, body: Any, *, model: str | None, secrets: Sequence[str]) -> UpstreamFailure:
    """What a non-2xx answer of `WebClient.call` means (its Outcome for the pool, its error for an
    OpenAI client). `call` returns classify's own body, which classifies the same again."""
    raw = body.encode() if isinstance(body, str) else orjson.dumps(body)
    return classify(status, raw, "application/json", model=model, secrets=secrets)


async def _timed(body: AsyncIterator[bytes], limit: float | None) -> AsyncGenerator[bytes, None]:
    """The body's chunks, each within `limit` seconds of the one before (a stalled answer is a
    TimeoutError, as httpx's read timeout is on the other path)."""
    chunks = aiter(body)
    while True:
        try:
            async with asyncio.timeout(limit):
                chunk = await anext(chunks)
        except StopAsyncIteration:
            return
        yield chunk


async def _send(client: httpx.AsyncClient, request: httpx.Request) -> httpx.Response:
    try:
        return await client.send(request, stream=True)
    except httpx.TimeoutException as exc:
        raise unreachable(type(exc).__name__, timed_out=True) from None
    except httpx.HTTPError as exc:
        raise unreachable(type(exc).__name__, timed_out=False) from None


async def _chunks(response: httpx.Response) -> AsyncGenerator[bytes, None]:
    try:
        async for chunk in response.aiter_bytes():
            yield chunk
    except httpx.TimeoutException as exc:
        raise unreachable(f"{type(exc).__name__} while streaming", timed_out=True) from None
    except httpx.HTTPError as exc:
        raise unreachable(f"the answer broke off ({type(exc).__name__})", timed_out=False) from None


async def _read(response: httpx.Response, limit: int, *, truncate: bool) -> bytes:
    """At most `limit` bytes of the body: the rest dropped (`truncate`) or refused."""
    parts: list[bytes] = []
    size = 0
    try:
        async for part in response.aiter_bytes():
            parts.append(part)
            size += len(part)
            if size > limit:
                if truncate:
                    break
                raise UpstreamFailure(response.status_code, Outcome.neutral(),
                                      UpstreamTooLarge(f"the ChatGPT upstream answered with over {limit >> 20} MiB"),
                                      {"detail": "answer too large"})
    except httpx.TimeoutException as exc:
        raise unreachable(f"{type(exc).__name__} while reading", timed_out=True) from None
    except httpx.HTTPError as exc:
        raise unreachable(f"the answer broke off ({type(exc).__name__})", timed_out=False) from None
    return b"".join(parts)[:limit]


def _parsed(raw: bytes, content_type: str | None) -> Any:
    if "json" in (content_type or "") or raw.lstrip()[:1] in (b"{", b"["):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return raw.decode("utf-8", errors="replace")


def _rotated_cookie(set_cookies: Sequence[str]) -> str | None:
    """The session cookie the answer set: whole, or NextAuth's chunks (`….0`, `….1`, …) joined in
    order (a large session token is split that way). A deleted cookie (empty value) is no rotation."""
    whole: str | None = None
    chunks: dict[int, str] = {}
    for header in set_cookies:
        name, _, rest = header.partition("=")
        value = rest.split(";", 1)[0].strip()
        name = name.strip()
        if not value:
            continue
        if name == SESSION_COOKIE:
            whole = value
        elif name.startswith(SESSION_COOKIE + ".") and name[len(SESSION_COOKIE) + 1:].isdigit():
            chunks[int(name[len(SESSION_COOKIE) + 1:])] = value
    if whole is not None:
        return whole
    return "".join(chunks[i] for i in sorted(chunks)) if chunks else None


def _session_gone(status: int, reason: str) -> UpstreamFailure:
    reason = reason or "session expired or revoked"
    return UpstreamFailure(status, Outcome(Verdict.AUTH_INVALID, reason=reason),
                           UpstreamAuthError("the ChatGPT account's session expired or was revoked"),
                           {"detail": "session expired or revoked"})
