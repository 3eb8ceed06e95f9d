"""One call to an OpenAI-compatible upstream, streamed or whole, with its failures turned into our
error tree, and the proxy each upstream is reached through.

The HTTP client was chosen by measurement (README, Performance): plain-HTTP upstreams without a
proxy (in-cluster vLLM, Ollama, the sandbox) go through libs/http1.py, about half aiohttp's CPU per
call; HTTPS and proxied upstreams through aiohttp, the cheapest library measured (3-8x less than
httpx). Both send the same request headers (`Accept-Encoding` included, libs/http1.py).
Foreign exceptions are converted here, once, at the boundary (`raise … from`); upstream error
text is scrubbed of every secret the worker holds (libs/secrets.py), since providers echo the key
they got.

Each call may have a limit on its response head (`head_timeout`): the caller sets one while
another upstream is left to fail over to (failover.py). A call that timed out before its head (connecting or
waiting) says so in `hung`.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import time
import urllib.request
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from libs.errors import (
    SwitchyardError,
    UpstreamAuthError,
    UpstreamBadRequest,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamTimeout,
)
from libs.http1 import ACCEPT_ENCODING, HTTP1Pool, InvalidHeader, ProtocolError, Response, ResponseTooLarge
from libs.openai_upstream.config import Upstream
from libs.secrets import scrub
from libs.sse import SSEDecoder

_MAX_ERROR_BODY = 16 * 1024
_MAX_ANSWER_BODY = 64 * 1024 * 1024  # a whole answer larger than this is refused, not buffered


def proxy_for(upstream: Upstream) -> str | None:
    """The upstream's own proxy, else HTTPS_PROXY / HTTP_PROXY (honouring NO_PROXY), read once.

    aiohttp's trust_env would look these up on every request, at a measured 0.4-0.7 ms each.
    """
    return proxy_for_url(upstream.base_url, upstream.proxy)


def proxy_for_url(url: str, own: str | None = None) -> str | None:
    """`own` if set, else the environment's proxy for `url` (None where NO_PROXY exempts its host)."""
    if own:
        return own
    parts = urlsplit(url)
    if parts.hostname and urllib.request.proxy_bypass(parts.hostname):
        return None
    return urllib.request.getproxies().get(parts.scheme) or None


def _error_text(raw: bytes) -> str:
    try:
        body = orjson.loads(raw)
        message = body["error"]["message"] if isinstance(body.get("error"), dict) else body.get("error")
        text = str(message or body)
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError):
        text = raw.decode("utf-8", errors="replace")
    return scrub(text)[:500]  # scrubbed whole, then cut: a cut must not leave half a key


def _error_param(raw: bytes) -> str | None:
    """The request field an upstream's 400 names (OpenAI's `error.param`), passed on to the client."""
    try:
        param = orjson.loads(raw)["error"]["param"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
    return param if isinstance(param, str) and len(param) <= 200 else None


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Retry-After in seconds: a number of seconds or an HTTP date (RFC 9110 10.2.3)."""
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def error_for_status(status: int, raw: bytes, headers: Mapping[str, str], upstream: str) -> SwitchyardError:
    text = _error_text(raw)
    where = f"upstream {upstream} answered {status}"
    if status in (401, 403):
        return UpstreamAuthError(f"{where}: the gateway's upstream credentials were refused")
    if status == 429:
        return UpstreamRateLimited(f"{where}: {text}", retry_after=_retry_after(headers) or 1.0)
    if status in (400, 404, 409, 413, 422):
        return UpstreamBadRequest(f"{where}: {text}", param=_error_param(raw))
    # An overloaded upstream's Retry-After goes on to the client (the edge sends err.headers()).
    return UpstreamError(f"{where}: {text}", retry_after=_retry_after(headers) if status == 503 else None)


def plain_http(upstream: Upstream, proxy: str | None) -> bool:
    """Whether calls to this upstream take the lean client (plain HTTP, no proxy)."""
    return proxy is None and urlsplit(upstream.base_url).scheme == "http"


@functools.cache  # one per upstream: aiohttp bounds connecting only; reads are the runtime's job
def _connect_only(seconds: float) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=None, sock_connect=seconds)


@functools.cache  # one entry per upstream and path: not parsed again on every call
def _plain_target(url: str) -> tuple[str, int, str]:
    """(host, port, request target) of a plain-HTTP URL."""
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or 80, parts.path + (f"?{parts.query}" if parts.query else "")


class UpstreamCall:
    """One call: `chunks()` streams it, yielding (chunks, done) per network read (the upstream
    chunk objects it held, and whether the stream's `[DONE]` was among them, so the last choices
    can travel with the end); `answer()` asks for the whole, non-streamed answer instead.

    `pool` is used for plain-HTTP upstreams without a proxy (`plain_http`), `session` otherwise.
    `head_timeout` bounds the wait for the response head (None: no limit of the call's own).
    """

    def __init__(
        self, session: aiohttp.ClientSession | None, pool: HTTP1Pool | None, upstream: Upstream, proxy: str | None,
        path: str, body: dict[str, Any], head_timeout: float | None = None,
    ) -> None:
        self.session = session
        self.pool = pool
        self.upstream = upstream
        self.proxy = proxy
        self.path = path
        self.body = body
        self.head_timeout = head_timeout
        self.hung = False  # timed out before the response head: connecting or waiting for it

    async def chunks(self) -> AsyncIterator[tuple[list[dict[str, Any]], bool]]:
        async with self._body("text/event-stream") as body:
            async for batch in self._events(body):
                yield batch

    async def answer(self, expect: str = "choices") -> dict[str, Any]:
        """The upstream's whole answer, parsed: a JSON object with a list under `expect` (`choices`
        of a chat.completion or text_completion, `data` of embeddings and images, `results` of
        moderations), else UpstreamProtocolError."""
        headers = self._headers("application/json")
        if self.pool is not None:  # plain coroutines all the way: no async generator per call
            with _PlainFailures(self) as failures:
                async with self._plain_call(headers) as response:
                    failures.answered = True
                    await _ensure_ok(response, self.upstream.name)
                    raw = await response.read_all(_MAX_ANSWER_BODY)
        else:
            async with self._aiohttp(headers) as body:
                raw = await _read_whole(body, self.upstream.name)
        try:
            answer = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise UpstreamProtocolError(f"upstream {self.upstream.name} sent invalid JSON") from exc
        if not isinstance(answer, dict) or not isinstance(answer.get(expect), list):
            raise UpstreamProtocolError(f"upstream {self.upstream.name} sent an answer without {expect}")
        return answer

    def _headers(self, accept: str) -> dict[str, str]:
        headers = {"content-type": "application/json", "accept": accept, "accept-encoding": ACCEPT_ENCODING}
        if self.upstream.api_key:
            headers["authorization"] = f"Bearer {self.upstream.api_key}"
        return headers

    def _body(self, accept: str) -> contextlib.AbstractAsyncContextManager[AsyncIterator[bytes]]:
        headers = self._headers(accept)
        return self._plain(headers) if self.pool is not None else self._aiohttp(headers)

    def _plain_call(self, headers: dict[str, str]) -> contextlib.AbstractAsyncContextManager[Response]:
        assert self.pool is not None
        host, port, target = _plain_target(self.upstream.base_url + self.path)
        return self.pool.post(host, port, target, headers, orjson.dumps(self.body),
                              connect_timeout=self.upstream.connect_timeout, head_timeout=self.head_timeout)

    # Both clients: the body of a 200 answer as it arrives. Failures inside the `async with` block
    # are converted here too. Leaving the block early (a cancelled task) closes the connection,
    # which is how the upstream learns the client has gone.

    @contextlib.asynccontextmanager
    async def _plain(self, headers: dict[str, str]) -> AsyncIterator[AsyncIterator[bytes]]:
        with _PlainFailures(self) as failures:
            async with self._plain_call(headers) as response:
                failures.answered = True
                await _ensure_ok(response, self.upstream.name)
                # Closed explicitly: an async generator left unfinished at [DONE] would be closed
                # by the loop's finalizer hook instead, a thread-safe wake-up and a task per call.
                async with contextlib.aclosing(response.body()) as body:
                    yield body

    @contextlib.asynccontextmanager
    async def _aiohttp(self, headers: dict[str, str]) -> AsyncIterator[AsyncIterator[bytes]]:
        assert self.session is not None
        name = self.upstream.name
        answered = False
        try:
            limit = _NO_LIMIT if self.head_timeout is None else asyncio.timeout(self.head_timeout)
            async with limit, self.session.post(
                self.upstream.base_url + self.path, data=orjson.dumps(self.body), headers=headers, proxy=self.proxy,
                timeout=_connect_only(self.upstream.connect_timeout),
            ) as response:
                limit.reschedule(None)
                answered = True
                if response.status != 200:
                    raw = await response.content.read(_MAX_ERROR_BODY)
                    raise error_for_status(response.status, raw, response.headers, name)
                yield response.content.iter_any()
        except TimeoutError as exc:
            self.hung = not answered
            raise _timed_out(name, answered) from exc
        except aiohttp.ClientPayloadError as exc:
            raise UpstreamProtocolError(f"upstream {name} broke off its answer") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"cannot reach upstream {name}: {type(exc).__name__}") from exc

    async def _events(self, body: AsyncIterator[bytes]) -> AsyncIterator[tuple[list[dict[str, Any]], bool]]:
        decoder = SSEDecoder()
        name = self.upstream.name
        async for raw in body:
            batch: list[dict[str, Any]] = []
            for event in decoder.feed(raw):
                if event.data == "[DONE]":
                    yield batch, True
                    return
                if not event.data:
                    continue
                try:
                    chunk = orjson.loads(event.data)
                except orjson.JSONDecodeError as exc:
                    raise UpstreamProtocolError(f"upstream {name} sent invalid JSON") from exc
                if isinstance(chunk, dict) and "error" in chunk:
                    raise UpstreamError(f"upstream {name} failed mid-stream: {_error_text(orjson.dumps(chunk))}")
                batch.append(chunk)
            if batch:
                yield batch, False
        raise UpstreamProtocolError(f"upstream {name} ended the stream without [DONE]")


async def _ensure_ok(response: Response, upstream: str) -> None:
    if response.status != 200:
        raw = await response.read(_MAX_ERROR_BODY)
        raise error_for_status(response.status, raw, response.headers, upstream)


class _PlainFailures:
    """A `with` block around one call of the plain client: its failures as our error types.
    `answered` (set once the response's headers are in) tells a broken-off answer from a
    connection that closed unanswered."""

    __slots__ = ("answered", "call")

    def __init__(self, call: UpstreamCall) -> None:
        self.call = call
        self.answered = False

    def __enter__(self) -> _PlainFailures:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        name = self.call.upstream.name
        if isinstance(exc, TimeoutError):
            self.call.hung = not self.answered
            raise _timed_out(name, self.answered) from exc
        if isinstance(exc, ResponseTooLarge):
            raise _answer_too_large(name) from exc
        if isinstance(exc, ProtocolError):
            if self.answered:
                raise UpstreamProtocolError(f"upstream {name} broke off its answer") from exc
            raise UpstreamError(f"cannot reach upstream {name}: the connection closed unanswered") from exc
        if isinstance(exc, InvalidHeader):
            raise UpstreamError(f"cannot call upstream {name}: {exc}") from exc
        if isinstance(exc, OSError):
            raise UpstreamError(f"cannot reach upstream {name}: {type(exc).__name__}") from exc


class _NoLimit:
    """`asyncio.timeout(None)` without its cost (a timer object per call): stateless, shared."""

    async def __aenter__(self) -> _NoLimit:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    def reschedule(self, when: float | None) -> None:
        pass


_NO_LIMIT = _NoLimit()


def _timed_out(upstream: str, answered: bool) -> UpstreamTimeout:
    if answered:
        return UpstreamTimeout(f"upstream {upstream} timed out")
    return UpstreamTimeout(f"upstream {upstream} did not answer in time (connecting or waiting for its response)")


def _answer_too_large(upstream: str) -> UpstreamProtocolError:
    return UpstreamProtocolError(f"upstream {upstream} sent an answer over {_MAX_ANSWER_BODY >> 20} MiB")


async def _read_whole(body: AsyncIterator[bytes], upstream: str) -> bytes:
    parts: list[bytes] = []
    size = 0
    async for part in body:
        size += len(part)
        if size > _MAX_ANSWER_BODY:
            raise _answer_too_large(upstream)
        parts.append(part)
    return b"".join(parts)
