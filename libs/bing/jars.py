"""Each account's cookies as Bing last left them.

Conversation create may answer with `Set-Cookie`; SydneyQt merged those into the cookies it used
and sent them on (§1.2 of the fact sheet), and so do we: into that account's jar, never into
another's (the seed merged a request's cookies into the shared default map). Jars live in this
replica's memory only: cookies are secrets, so they are never written to the shared KV; a replica
that has not created a conversation on an account yet starts from its configured cookies.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from libs import secrets
from libs.bing.config import BingAccount


class CookieJars:
    def __init__(self, accounts: Iterable[BingAccount]) -> None:
        self._jars: dict[str, dict[str, str]] = {a.name: dict(a.cookies) for a in accounts}

    def get(self, account: str) -> dict[str, str]:
        return dict(self._jars[account])

    def update(self, account: str, cookies: Mapping[str, str]) -> None:
        # a cookie Bing set is as secret as the ones configured; Bing renews some on every create,
        # so the account's current ones replace its earlier ones in the scrub list (bounded)
        secrets.hold_as(f"bing-account.{account}", cookies.values())
        self._jars[account] = dict(cookies)
