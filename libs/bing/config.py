"""The Bing side every Bing-speaking worker reads alike: where Bing is, and the cookie accounts.

    SYDNEY_CREATE_URL     conversation create (default Bing's edgeservices URL)
    SYDNEY_CHATHUB_URL    the ChatHub websocket (default wss://sydney.bing.com/sydney/ChatHub)
    BING_BASE_URL         www.bing.com: kblob upload, blob URLs and the image creator hang off it
    DEFAULT_COOKIES       seed 000: one account's cookie string (or a cookies.json export), named
                          `default`
    SYDNEY_ACCOUNTS_FILE  TOML: [[accounts]] name, cookies (a cookie string or an export), optional
                          proxy, optional daily_budget (conversations a UTC day; Bing caps turns a day)
    HTTPS_PROXY / HTTP_PROXY  for every account without its own proxy

sydney-worker and image-worker's Bing backend read the same variables, so they lease the same
accounts from one pool (libs/account_pool, pool name `POOL`) and never run two turns on one
account at once. An account's name is what the pool, the logs and the metrics show: never a secret.
Every cookie value is held for scrubbing (libs/secrets.py) the moment it is read.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from libs import secrets
from libs.bing.client import BingEndpoints
from libs.bing.cookies import format_cookies, parse_cookies
from libs.openai_upstream.call import proxy_for_url
from libs.settings import ConfigError, env_str, load_toml

DEFAULT_CREATE_URL = "https://edgeservices.bing.com/edgesvc/turing/conversation/create"
DEFAULT_CHATHUB_URL = "wss://sydney.bing.com/sydney/ChatHub"
DEFAULT_BASE_URL = "https://www.bing.com"
POOL = "bing"  # the account pool's name in SY_V1_ACCOUNTS: one per Bing account set, whichever worker
DEFAULT_ACCOUNT = "default"  # the account DEFAULT_COOKIES makes
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_KEYS = {"name", "cookies", "proxy", "daily_budget"}


@dataclass(frozen=True)
class BingAccount:
    name: str
    cookies: Mapping[str, str] = field(repr=False)  # as configured; Set-Cookie merges live in jars.py
    proxy: str | None = field(default=None, repr=False)  # may hold a password
    daily_budget: int | None = None

    @property
    def fingerprint(self) -> str:
        """A short hash of the cookies: when an operator replaces them, a quarantine lifts."""
        return hashlib.sha256(format_cookies(self.cookies).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class BingConfig:
    endpoints: BingEndpoints
    accounts: tuple[BingAccount, ...]

    def proxy_for(self, account: BingAccount | None) -> str | None:
        """The account's proxy, else the environment's (HTTPS_PROXY / HTTP_PROXY, NO_PROXY)."""
        return proxy_for_url(self.endpoints.base_url, account.proxy if account is not None else None)


def _cookies(text: Any, where: str) -> dict[str, str]:
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"{where} must be a non-empty cookie string")
    try:
        cookies = parse_cookies(text)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    if not cookies:
        raise ConfigError(f"{where} holds no cookie")
    return cookies


def _account(index: int, table: Any) -> BingAccount:
    where = f"SYDNEY_ACCOUNTS_FILE: accounts[{index}]"
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    unknown = set(table) - _KEYS
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
    name = table.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(f"{where}.name must be 1-64 letters, digits, '-' or '_'")
    proxy = table.get("proxy")
    if proxy is not None and (not isinstance(proxy, str) or not proxy.strip()):
        raise ConfigError(f"{where}.proxy must be a non-empty string")
    budget = table.get("daily_budget")
    if budget is not None and (type(budget) is not int or budget < 1):
        raise ConfigError(f"{where}.daily_budget must be a whole number of conversations, at least 1")
    return BingAccount(name, _cookies(table.get("cookies"), f"{where}.cookies"),
                       proxy.strip() if isinstance(proxy, str) else None, budget)


def _url(name: str, default: str, schemes: tuple[str, ...], env: Mapping[str, str] | None) -> str:
    url = env_str(name, "", env).strip() or default
    if not url.startswith(schemes):
        raise ConfigError(f"{name} must be a {' or '.join(s.rstrip(':/') for s in schemes)} URL")
    return url.rstrip("/")


def load_bing_config(env: Mapping[str, str] | None = None) -> BingConfig:
    """Where Bing is and the accounts; ConfigError naming the variable when something is wrong.
    No account at all is allowed: the worker then runs only callers who bring their own cookies."""
    endpoints = BingEndpoints(
        create_url=_url("SYDNEY_CREATE_URL", DEFAULT_CREATE_URL, ("http://", "https://"), env),
        chathub_url=_url("SYDNEY_CHATHUB_URL", DEFAULT_CHATHUB_URL, ("ws://", "wss://"), env),
        base_url=_url("BING_BASE_URL", DEFAULT_BASE_URL, ("http://", "https://"), env),
    )
    accounts: list[BingAccount] = []
    default_cookies = env_str("DEFAULT_COOKIES", "", env).strip()
    if default_cookies:
        accounts.append(BingAccount(DEFAULT_ACCOUNT, _cookies(default_cookies, "DEFAULT_COOKIES")))
    tables = load_toml("SYDNEY_ACCOUNTS_FILE", env).get("accounts", [])
    if not isinstance(tables, list):
        raise ConfigError("SYDNEY_ACCOUNTS_FILE: `accounts` must be an array of tables ([[accounts]])")
    accounts.extend(_account(i, table) for i, table in enumerate(tables))
    names = [a.name for a in accounts]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"Bing account names must be unique; repeated: {duplicates}")
    for account in accounts:
        hold_cookies(account.cookies)
        secrets.hold_url(account.proxy)
    for variable in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
        secrets.hold_url(env_str(variable, "", env).strip() or None)
    return BingConfig(endpoints, tuple(accounts))


def hold_cookies(cookies: Mapping[str, str]) -> None:
    """Every cookie value is a credential: scrubbed verbatim from whatever text leaves the process."""
    for value in cookies.values():
        secrets.hold(value)
