"""One Bing call on one set of cookies, for every Bing-speaking worker: a chat turn (create a
conversation unless one is continued, then the ChatHub websocket) or an image upload.

Whose cookies: a pool account's (`BingCalls.account`: its jar, its proxy) or the caller's own
(`BingCalls.caller`: never stored, never logged; Set-Cookie answers to them are dropped with
them). Failures come out as `BingFailure` (failures.py): the pool's outcome and the client's error.
Leasing is the caller's: this module runs what it is given.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import cast

import httpx

from libs.bing.client import chat, create_conversation, upload_image
from libs.bing.config import BingConfig
from libs.bing.conversation import Conversation
from libs.bing.cookies import parse_cookies
from libs.bing.errors import BingError, CreateFailed
from libs.bing.failures import BingFailure, create_failure, transport_failure, turn_failure
from libs.bing.invocation import ChatRequest, build_invocation
from libs.bing.jars import CookieJars
from libs.bing.turn import TurnFailed, TurnItem, TurnReader
from libs.errors import InvalidRequest

CREATE_TIMEOUT = 10.0  # seconds, SydneyQt's (fact sheet §5)
UPLOAD_TIMEOUT = 60.0
READ_TIMEOUT = 30.0  # silence on the websocket that ends a turn


@dataclass(frozen=True)
class Who:
    """Whose cookies a call runs on: a pool account (`account` names it) or the caller (None)."""

    account: str | None
    cookies: Mapping[str, str] = field(repr=False)
    proxy: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Opened:
    """The turn's conversation, before its first item; `created`: a new one (the daily budget counts it)."""

    conversation: Conversation
    created: bool


class BingCalls:
    def __init__(self, config: BingConfig, *, read_timeout: float = READ_TIMEOUT) -> None:
        self.config = config
        self.jars = CookieJars(config.accounts)
        # each account's proxy once: the environment's is read from os.environ on every lookup
        self._proxies = {a.name: config.proxy_for(a) for a in config.accounts}
        self._caller_proxy = config.proxy_for(None)
        self._read_timeout = read_timeout
        self._clients: dict[str | None, httpx.AsyncClient] = {}

    def account(self, name: str) -> Who:
        return Who(name, self.jars.get(name), self._proxies[name])

    def caller(self, cookie_string: str) -> Who:
        """The caller's own cookies (a 400 naming `cookies` when they cannot be read)."""
        try:
            cookies = parse_cookies(cookie_string)
        except ValueError:
            raise InvalidRequest("the cookies given are neither a cookie string nor a cookie export",
                                 param="cookies") from None
        return Who(None, cookies, self._caller_proxy)

    def anonymous(self) -> Who:
        """No cookies at all: SydneyQt uploads images so, and so does a caller who brings none."""
        return Who(None, {}, self._caller_proxy)

    def _http(self, proxy: str | None) -> httpx.AsyncClient:
        client = self._clients.get(proxy)
        if client is None:
            # redirects are not followed: a create answered with a redirect is a sign-in page, a failure
            client = self._clients[proxy] = httpx.AsyncClient(proxy=proxy, timeout=httpx.Timeout(CREATE_TIMEOUT),
                                                              follow_redirects=False, trust_env=False)
        return client

    async def turn(self, who: Who, request: ChatRequest,
                   conversation: Conversation | None = None) -> AsyncIterator[Opened | TurnItem]:
        """Opened first, then the reader's items up to TurnEnd; BingFailure for any failure."""
        endpoints = self.config.endpoints
        cookies = dict(who.cookies)
        created = conversation is None
        if conversation is None:
            try:
                conversation, cookies = await create_conversation(self._http(who.proxy), endpoints, cookies)
            except CreateFailed as exc:
                raise create_failure(exc) from None
            except BingError as exc:
                raise transport_failure(exc) from None
            if who.account is not None:
                self.jars.update(who.account, cookies)
        yield Opened(conversation, created)
        invocation = build_invocation(request, conversation, start_of_session=created)
        # chat() is an async generator (annotated as an iterator): closed here whatever happens
        items = cast(AsyncGenerator[TurnItem, None], chat(
            endpoints, conversation, cookies, invocation, proxy=who.proxy,
            reader=TurnReader(endpoints.base_url), read_timeout=self._read_timeout))
        try:
            async for item in items:
                if isinstance(item, TurnFailed):
                    raise turn_failure(item, continued=not created)
                yield item
        except BingError as exc:
            raise transport_failure(exc, continued=not created) from None
        finally:
            await items.aclose()

    async def upload(self, who: Who, data: bytes) -> str:
        """The blob URL of an uploaded image (SydneyQt sends no cookies with it; an account's are sent
        when given, as other clients do, so Bing may tie the image to the account's conversation)."""
        try:
            return await upload_image(self._http(who.proxy), self.config.endpoints, data, cookies=who.cookies or None)
        except BingError as exc:
            raise transport_failure(exc) from None

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()


__all__ = ["BingCalls", "BingFailure", "Opened", "Who"]
