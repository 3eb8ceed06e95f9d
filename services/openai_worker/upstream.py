"""One streamed call to an OpenAI-compatible upstream, with its failures turned into our error tree.

HTTP errors and transport failures are converted here, once, at the boundary (`raise … from`);
upstream error text is redacted, since providers echo parts of the key they were sent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
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
from libs.logs import redact
from libs.sse import SSEDecoder
from services.openai_worker.config import Upstream

_MAX_ERROR_BODY = 16 * 1024


def _error_text(raw: bytes) -> str:
    try:
        body = orjson.loads(raw)
        message = body["error"]["message"] if isinstance(body.get("error"), dict) else body.get("error")
        text = str(message or body)
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError):
        text = raw.decode("utf-8", errors="replace")
    return redact(text)[:500]


def _retry_after(headers: httpx.Headers) -> float | None:
    try:
        return float(headers["retry-after"])
    except (KeyError, ValueError):
        return None


def error_for_status(status: int, raw: bytes, headers: httpx.Headers, upstream: str) -> SwitchyardError:
    text = _error_text(raw)
    where = f"upstream {upstream} answered {status}"
    if status in (401, 403):
        return UpstreamAuthError(f"{where}: the gateway's upstream credentials were refused")
    if status == 429:
        return UpstreamRateLimited(f"{where}: {text}", retry_after=_retry_after(headers) or 1.0)
    if status in (400, 404, 409, 413, 422):
        return UpstreamBadRequest(f"{where}: {text}")
    return UpstreamError(f"{where}: {text}")


class StreamedCall:
    """Yields lists of upstream chunk objects, one list per network read."""

    def __init__(self, client: httpx.AsyncClient, upstream: Upstream, path: str, body: dict[str, Any]) -> None:
        self.client = client
        self.upstream = upstream
        self.path = path
        self.body = body

    async def chunks(self) -> AsyncIterator[list[dict[str, Any]]]:
        headers = {"content-type": "application/json", "accept": "text/event-stream"}
        if self.upstream.api_key:
            headers["authorization"] = f"Bearer {self.upstream.api_key}"
        request = self.client.build_request(
            "POST", self.upstream.base_url + self.path, content=orjson.dumps(self.body), headers=headers
        )
        try:
            response = await self.client.send(request, stream=True)
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(f"upstream {self.upstream.name} timed out") from exc
        except httpx.HTTPError as exc:
            raise UpstreamError(f"cannot reach upstream {self.upstream.name}: {type(exc).__name__}") from exc
        try:
            if response.status_code != 200:
                raw = b""
                async for piece in response.aiter_bytes():
                    raw += piece
                    if len(raw) > _MAX_ERROR_BODY:
                        break
                raise error_for_status(response.status_code, raw, response.headers, self.upstream.name)
            async for batch in self._events(response):
                yield batch
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(f"upstream {self.upstream.name} timed out mid-stream") from exc
        except httpx.HTTPError as exc:
            raise UpstreamProtocolError(
                f"upstream {self.upstream.name} broke off the stream: {type(exc).__name__}"
            ) from exc
        finally:
            await response.aclose()  # on cancel too: closing the connection tells the upstream to stop

    async def _events(self, response: httpx.Response) -> AsyncIterator[list[dict[str, Any]]]:
        decoder = SSEDecoder()
        done = False
        async for raw in response.aiter_raw():
            batch: list[dict[str, Any]] = []
            for event in decoder.feed(raw):
                if event.data == "[DONE]":
                    done = True
                    break
                if not event.data:
                    continue
                try:
                    chunk = orjson.loads(event.data)
                except orjson.JSONDecodeError as exc:
                    raise UpstreamProtocolError(f"upstream {self.upstream.name} sent invalid JSON") from exc
                if isinstance(chunk, dict) and "error" in chunk:
                    raise UpstreamError(f"upstream {self.upstream.name} failed mid-stream: "
                                        f"{_error_text(orjson.dumps(chunk))}")
                batch.append(chunk)
            if batch:
                yield batch
            if done:
                return
        raise UpstreamProtocolError(f"upstream {self.upstream.name} ended the stream without [DONE]")
