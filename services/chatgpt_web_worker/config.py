"""chatgpt-web-worker's configuration: the upstream's base URL, the accounts, the models.

    CHATGPT_BASE_URL        https://chatgpt.com (a mirror or reverse proxy is another base URL;
                            with or without a trailing /backend-api)
    CHATGPT_ACCESS_TOKENS   comma list of access tokens, one account each
    CHATGPT_ACCOUNTS_FILE   TOML: [[accounts]] name, access_token and/or session_token (the
                            __Secure-next-auth.session-token cookie: mints and refreshes access
                            tokens), optional proxy, optional models (slugs the account may use)
    CHATGPT_MODELS          the slugs served (default below); CHATGPT_MODEL_ALIASES name=slug,...
                            OpenAI names mapped onto them (default below)
    GO_CHATGPT_API_PROXY    go-chatgpt-api's proxy setting (seed 003), for every account without
                            its own; else HTTPS_PROXY / HTTP_PROXY as everywhere
    CHATGPT_MODELS_FROM_ACCOUNTS  1: at start, ask each account's `GET /backend-api/models` which
                            slugs it may use (its plan), and serve those (within CHATGPT_MODELS
                            when that is set)
    CHATGPT_AUTH_URL        where `POST /auth/login` exchanges a username and password for an
                            access token (a service speaking go-chatgpt-api's login: JSON
                            {username, password} in, {accessToken} out); unset: the route says 501

An account's name is what the pool, the logs and the metrics show: never a secret. Accounts from
CHATGPT_ACCESS_TOKENS are named after a short hash of their token (stable when the list is
reordered; a hash prefix says nothing usable about a token). Every secret is held for scrubbing
(libs/secrets.py) the moment it is read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from libs import secrets
from libs.settings import ConfigError, env_bool, env_list, env_str, load_toml

DEFAULT_BASE_URL = "https://chatgpt.com"
DEFAULT_MODELS = ("auto", "gpt-4o", "gpt-4o-mini", "o1", "text-davinci-002-render-sha")
# OpenAI API names a client may send, onto web slugs (only those whose slug is served are kept)
DEFAULT_ALIASES = {"gpt-3.5-turbo": "text-davinci-002-render-sha", "gpt-4": "gpt-4o", "gpt-4-turbo": "gpt-4o",
                   "o1-preview": "o1", "o1-mini": "o1"}
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass(frozen=True)
class WebAccount:
    name: str
    access_token: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    proxy: str | None = field(default=None, repr=False)  # may hold a password
    models: frozenset[str] | None = None  # None: every slug served

    @property
    def fingerprint(self) -> str:
        """A short hash of the credentials: when an operator replaces them, a quarantine lifts."""
        material = f"{self.access_token or ''}\n{self.session_token or ''}".encode()
        return hashlib.sha256(material).hexdigest()[:16]


@dataclass(frozen=True)
class WebConfig:
    base_url: str
    accounts: tuple[WebAccount, ...]
    models: tuple[str, ...]
    aliases: dict[str, str]
    default_proxy: str | None = field(default=None, repr=False)
    auth_url: str | None = None
    models_from_accounts: bool = False
    models_explicit: bool = False  # CHATGPT_MODELS was set: live lists narrow within it

    def slug_for(self, model: str) -> str | None:
        """The web slug a requested model runs on (a slug itself, or an OpenAI name mapped onto one)."""
        if model in self.models:
            return model
        return self.aliases.get(model)


def _account(index: int, table: Any, served: tuple[str, ...]) -> WebAccount:
    where = f"CHATGPT_ACCOUNTS_FILE: accounts[{index}]"
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table")
    unknown = set(table) - {"name", "access_token", "session_token", "proxy", "models"}
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}")
    name = table.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(f"{where}.name must be 1-64 letters, digits, '-' or '_'")
    values: dict[str, str | None] = {}
    for key in ("access_token", "session_token", "proxy"):
        value = table.get(key)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ConfigError(f"{where}.{key} must be a non-empty string")
        values[key] = value.strip() if isinstance(value, str) else None
    if not values["access_token"] and not values["session_token"]:
        raise ConfigError(f"{where} needs an access_token or a session_token")
    models = table.get("models")
    allowed: frozenset[str] | None = None
    if models is not None:
        if not isinstance(models, list) or not models or not all(isinstance(m, str) and m for m in models):
            raise ConfigError(f"{where}.models must be a non-empty list of model slugs")
        strangers = sorted(set(models) - set(served))
        if strangers:
            raise ConfigError(f"{where}.models names slugs this worker does not serve: {strangers} "
                              f"(CHATGPT_MODELS is {','.join(served)})")
        allowed = frozenset(models)
    return WebAccount(name, values["access_token"], values["session_token"], values["proxy"], allowed)


def token_account_name(token: str) -> str:
    return "token-" + hashlib.sha256(token.encode()).hexdigest()[:10]


def _aliases(env: Mapping[str, str] | None, served: tuple[str, ...]) -> dict[str, str]:
    raw = env_list("CHATGPT_MODEL_ALIASES", env)
    if not raw:
        return {name: slug for name, slug in DEFAULT_ALIASES.items() if slug in served and name not in served}
    aliases: dict[str, str] = {}
    for item in raw:
        name, sep, slug = item.partition("=")
        if not sep or not name.strip() or slug.strip() not in served:
            raise ConfigError(f"CHATGPT_MODEL_ALIASES: {item!r} must be name=slug with a served slug "
                              f"(CHATGPT_MODELS is {','.join(served)})")
        aliases[name.strip()] = slug.strip()
    return aliases


def load_config(env: Mapping[str, str] | None = None) -> WebConfig:
    """The worker's configuration; ConfigError naming the variable when something is wrong. With no
    account at all, ConfigError too: the caller (devstack) decides on sandbox mode."""
    base_url = (env_str("CHATGPT_BASE_URL", "", env).strip() or DEFAULT_BASE_URL).rstrip("/")
    if not base_url.startswith(("http://", "https://")):
        raise ConfigError("CHATGPT_BASE_URL must be an http(s) URL")
    served = tuple(env_list("CHATGPT_MODELS", env)) or DEFAULT_MODELS
    accounts: list[WebAccount] = []
    for token in env_list("CHATGPT_ACCESS_TOKENS", env):
        accounts.append(WebAccount(token_account_name(token), access_token=token))
    tables = load_toml("CHATGPT_ACCOUNTS_FILE", env).get("accounts", [])
    if not isinstance(tables, list):
        raise ConfigError("CHATGPT_ACCOUNTS_FILE: `accounts` must be an array of tables ([[accounts]])")
    accounts.extend(_account(i, table, served) for i, table in enumerate(tables))
    names = [a.name for a in accounts]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"account names must be unique; repeated: {duplicates}")
    if not accounts:
        raise ConfigError("no ChatGPT account: set CHATGPT_ACCESS_TOKENS or CHATGPT_ACCOUNTS_FILE")
    default_proxy = env_str("GO_CHATGPT_API_PROXY", "", env).strip() or None
    for account in accounts:
        for secret in (account.access_token, account.session_token):
            secrets.hold(secret)
        secrets.hold_url(account.proxy)
    secrets.hold_url(default_proxy)
    auth_url = env_str("CHATGPT_AUTH_URL", "", env).strip() or None
    if auth_url is not None and not auth_url.startswith(("http://", "https://")):
        raise ConfigError("CHATGPT_AUTH_URL must be an http(s) URL")
    secrets.hold_url(auth_url)
    return WebConfig(base_url, tuple(accounts), served, _aliases(env, served), default_proxy, auth_url,
                     models_from_accounts=env_bool("CHATGPT_MODELS_FROM_ACCOUNTS", False, env),
                     models_explicit=bool(env_list("CHATGPT_MODELS", env)))


def with_live_models(config: WebConfig, live: dict[str, frozenset[str]]) -> WebConfig:
    """The configuration once the accounts said which slugs they may use (`live`: account name ->
    slugs, for those that answered): each such account is limited to its slugs (within its own
    `models`), and the worker serves what some account may use (within CHATGPT_MODELS when set)."""
    if not live:
        return config
    accounts = []
    for account in config.accounts:
        slugs = live.get(account.name)
        if slugs is not None:
            allowed = slugs if account.models is None else slugs & account.models
            account = dataclasses.replace(account, models=frozenset(allowed))
        accounts.append(account)
    usable: set[str] = set()
    for account in accounts:
        usable |= account.models if account.models is not None else set(config.models)
    served = tuple(m for m in config.models if m in usable) if config.models_explicit else tuple(sorted(usable))
    aliases = {name: slug for name, slug in config.aliases.items() if slug in served and name not in served}
    if not config.models_explicit:  # the default names onto slugs the accounts turned out to have
        aliases = {name: slug for name, slug in DEFAULT_ALIASES.items() if slug in served and name not in served}
    return dataclasses.replace(config, accounts=tuple(accounts), models=served, aliases=aliases)
