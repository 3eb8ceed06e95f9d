"""Each account's current access token: the configured one, or one minted from the session cookie
(`GET /api/auth/session`) and refreshed before it expires or once the upstream says it expired.

Tokens live in this process only (a secret is never written to the shared pool state); each
replica mints its own from the same session cookie. A rotated session cookie the upstream sets
replaces the configured one in memory. One refresh per account at a time: concurrent callers
wait for it and share its result.
"""

from __future__ import annotations

import asyncio
import time

from libs import secrets
from services.chatgpt_web_worker.client import WebClient
from services.chatgpt_web_worker.config import WebAccount

REFRESH_MARGIN = 60.0  # seconds before `exp` when a token with a session cookie behind it is renewed


class NoToken(Exception):
    """The account has no usable access token and no session cookie to mint one."""


class Credentials:
    def __init__(self, client: WebClient, accounts: tuple[WebAccount, ...], proxies: dict[str, str | None]) -> None:
        self._client = client
        self._accounts = {a.name: a for a in accounts}
        self._proxies = proxies
        self._tokens: dict[str, str] = {a.name: a.access_token for a in accounts if a.access_token}
        self._sessions: dict[str, str] = {a.name: a.session_token for a in accounts if a.session_token}
        self._locks: dict[str, asyncio.Lock] = {a.name: asyncio.Lock() for a in accounts}

    def can_refresh(self, name: str) -> bool:
        return name in self._sessions

    async def token(self, name: str) -> str:
        """The account's access token, minted or renewed first when it is missing or about to expire."""
        token = self._tokens.get(name)
        if token is not None and not self._expiring(token):
            return token
        if name not in self._sessions:
            if token is None:
                raise NoToken(name)
            return token  # no way to renew it: let the upstream judge
        return await self.refresh(name, stale=token)

    async def refresh(self, name: str, stale: str | None) -> str:
        """A new token from the session cookie (once: a caller that waited on another's refresh
        gets that result). Raises the client's UpstreamFailure when the session is refused."""
        async with self._locks[name]:
            current = self._tokens.get(name)
            if current is not None and current != stale and not self._expiring(current):
                return current
            session = await self._client.refresh(self._sessions[name], proxy=self._proxies.get(name))
            secrets.hold(session.access_token)
            self._tokens[name] = session.access_token
            if session.session_token:
                secrets.hold(session.session_token)
                self._sessions[name] = session.session_token
            return session.access_token

    def _expiring(self, token: str) -> bool:
        expiry = self._client.token_expiry(token)
        return expiry is not None and expiry - time.time() < REFRESH_MARGIN
