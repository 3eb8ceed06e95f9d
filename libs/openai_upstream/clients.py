"""The HTTP clients of one worker's upstreams: which client each upstream takes, made once.

Plain-HTTP upstreams without a proxy go through the lean pool (libs/http1.py), the rest through
one aiohttp session (call.py says why). Proxies are resolved once per upstream. Every credential
of every upstream (its key, its proxy's and its base URL's user info) is held for scrubbing from
the moment the worker knows it (libs/secrets.py).

`get` fetches a URL an upstream answered with (an image-worker's `url` answer turned into
`b64_json`): through the upstream's own proxy or the environment's, size-limited, never echoing
the URL (a signed URL's query is a credential).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from libs import secrets
from libs.errors import SwitchyardError, UpstreamError, UpstreamProtocolError, UpstreamTimeout, UpstreamTooLarge
from libs.http1 import ACCEPT_ENCODING, HTTP1Pool
from libs.openai_upstream.call import UpstreamCall, plain_http, proxy_for, proxy_for_url
from libs.openai_upstream.config import Upstream


class UpstreamClients:
    def __init__(self, upstreams: Sequence[Upstream], *, connect_timeout: float = 10.0) -> None:
        self._proxies = {u.name: proxy_for(u) for u in upstreams}
        self._plain = {u.name: plain_http(u, self._proxies[u.name]) for u in upstreams}
        self._connect_timeout = connect_timeout
        self._session: aiohttp.ClientSession | None = None
        self._pool = HTTP1Pool(connect_timeout=connect_timeout)
        for u in upstreams:  # whatever credential this worker holds is scrubbed from all text
            secrets.hold(u.api_key)
            secrets.hold_url(u.base_url)
            secrets.hold_url(self._proxies[u.name])

    def session(self) -> aiohttp.ClientSession:
        # Created lazily: aiohttp sessions belong to the running event loop.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60),
                # Read limits are the runtime's job (first token, idle); only connecting is bounded here.
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self._connect_timeout),
                trust_env=False,  # proxies are resolved once per upstream (proxy_for)
                auto_decompress=True,
            )
        return self._session

    def call(self, upstream: Upstream, path: str, payload: dict[str, Any], head_timeout: float | None) -> UpstreamCall:
        """One POST of `payload` to `{base_url}{path}` (not sent until read: `answer()` or `chunks()`)."""
        if self._plain[upstream.name]:
            return UpstreamCall(None, self._pool, upstream, None, path, payload, head_timeout)
        return UpstreamCall(self.session(), None, upstream, self._proxies[upstream.name], path, payload, head_timeout)

    async def get(self, url: str, *, limit: int, upstream: Upstream, within: float | None = None) -> tuple[bytes, str]:
        """The body and content type of a GET of `url`, an address `upstream` answered with.

        UpstreamProtocolError when the body is over `limit` bytes (refused from Content-Length
        when it says so, else stopped once past it) or the URL is not http(s); UpstreamError on a
        non-2xx status or a failed connection; UpstreamTimeout past `within` seconds (None: the
        job's own limits bound it). Errors name the upstream, never the URL.
        """
        name = upstream.name
        if urlsplit(url).scheme.lower() not in ("http", "https"):
            raise _blamed(UpstreamProtocolError(f"upstream {name} answered with a URL that is not http(s)"), name)
        try:
            async with asyncio.timeout(within), self.session().get(
                url, proxy=proxy_for_url(url, upstream.proxy), headers={"accept-encoding": ACCEPT_ENCODING},
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=upstream.connect_timeout),
            ) as response:
                if not 200 <= response.status < 300:
                    raise UpstreamError(f"the URL upstream {name} answered with gave status {response.status}")
                if response.content_length is not None and response.content_length > limit:
                    raise _too_large(name, limit)
                parts: list[bytes] = []
                size = 0
                async for part in response.content.iter_any():  # stopped past the limit, not buffered
                    size += len(part)
                    if size > limit:
                        raise _too_large(name, limit)
                    parts.append(part)
                return b"".join(parts), response.headers.get("content-type", "").split(";")[0].strip()
        except SwitchyardError as err:
            raise _blamed(err, name) from None
        except TimeoutError as exc:
            raise _blamed(UpstreamTimeout(f"the URL upstream {name} answered with did not load in time"), name) from exc
        except aiohttp.ClientError as exc:
            raise _blamed(UpstreamError(f"cannot load the URL upstream {name} answered with: "
                                        f"{type(exc).__name__}"), name) from exc

    async def aclose(self) -> None:
        await self._pool.aclose()
        if self._session is not None:
            await self._session.close()


def _too_large(name: str, limit: int) -> UpstreamTooLarge:
    return UpstreamTooLarge(f"the URL upstream {name} answered with holds more than {limit} bytes")


def _blamed(err: SwitchyardError, name: str) -> SwitchyardError:
    err.upstream = name
    return err
