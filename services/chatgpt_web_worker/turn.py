"""One `POST /backend-api/conversation` on one account: its token, one refresh when the upstream
says the token expired, the raw SSE bytes.

A failure before the first byte is the client's `UpstreamFailure` (classified: its `outcome` says
what it means for the account, its `error` what the client is told). A token the upstream calls
expired is minted again from the session cookie once; if the account has none, or the fresh token
is refused too, the failure stands (the pool quarantines the account).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncGenerator
from typing import Any

from libs.account_pool.outcome import Verdict
from services.chatgpt_web_worker.client import WebClient
from services.chatgpt_web_worker.credentials import Credentials
from services.chatgpt_web_worker.upstream_errors import UpstreamFailure


class Turns:
    def __init__(self, client: WebClient, credentials: Credentials, proxies: dict[str, str | None],
                 default_proxy: str | None) -> None:
        self.client = client
        self.credentials = credentials
        self._proxies = proxies
        self._default_proxy = default_proxy

    def proxy(self, account: str | None) -> str | None:
        return self._proxies.get(account) if account is not None else self._default_proxy

    @staticmethod
    def device_id(account: str | None) -> str:
        """A stable device id per account, as a browser keeps one (a random one per caller token)."""
        return str(uuid.uuid5(uuid.NAMESPACE_URL, f"switchyard:{account}")) if account else str(uuid.uuid4())

    async def open(
        self, account: str | None, body: dict[str, Any], token: str | None = None,
    ) -> AsyncGenerator[bytes, None]:
        """The conversation's SSE bytes, on `account` (its token) or with the caller's `token`."""
        own = token is None
        if token is None:
            assert account is not None
            token = await self.credentials.token(account)
        proxy = self.proxy(account)
        device = self.device_id(account)
        async with contextlib.AsyncExitStack() as stack:
            try:
                chunks = await stack.enter_async_context(
                    self.client.stream_conversation(token, body, proxy=proxy, device_id=device))
            except UpstreamFailure as failure:
                if not (own and account is not None and failure.outcome.verdict is Verdict.AUTH_EXPIRED
                        and self.credentials.can_refresh(account)):
                    raise
                token = await self.credentials.refresh(account, stale=token)
                chunks = await stack.enter_async_context(
                    self.client.stream_conversation(token, body, proxy=proxy, device_id=device))
            async for chunk in chunks:
                yield chunk

    async def call(self, account: str | None, method: str, path: str, *, query: dict[str, str] | None,
                   json: Any, token: str | None = None) -> tuple[int, Any]:
        """A management call (list, get, rename, ...): the upstream's status and body, kept."""
        own = token is None
        if token is None:
            assert account is not None
            token = await self.credentials.token(account)
        status, body = await self.client.call(token, method, path, query=query, json=json, proxy=self.proxy(account))
        if status == 401 and own and account is not None and self.credentials.can_refresh(account):
            token = await self.credentials.refresh(account, stale=token)
            status, body = await self.client.call(token, method, path, query=query, json=json,
                                                  proxy=self.proxy(account))
        return status, body
