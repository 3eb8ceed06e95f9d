"""Model → worker pool routing: a static table from configuration plus what live workers announce.

A request is routed by its model and its kind (the route it came to: chat, completion, embedding,
image, moderation). Resolution order for a requested model:
1. aliases (`SY_ALIASES="gpt4=gpt-4o,fast=sandbox-fast"`): the alias is replaced by its target;
2. a model a live worker announced for this kind (`serves`): its pool; a completion goes to a
   chat model too (the edge converts). A live model that serves other kinds only is a 400
   `model_not_supported` naming what it serves;
3. static routes (`SY_ROUTES="gpt-*=openai,llama*=openai"`, fnmatch patterns, first match wins):
   queued even while the pool has no live replica, so workers can scale from zero;
4. for chat and completion, the default chat pool (`SY_DEFAULT_POOL`), if set;
5. otherwise 404 `model_not_found`.

The same keys may come from the TOML file named by SWITCHYARD_CONFIG:
    [routing]
    default_pool = ""
    aliases = { gpt4 = "gpt-4o" }
    routes = [ { match = "gpt-*", pool = "openai" } ]
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import proto
from libs.errors import InvalidRequest, ModelNotFound
from libs.settings import ConfigError, env_list, env_str, load_toml
from proto.messages import AccountsState, Announce

# how a kind is named to a client: the route it called
ROUTE_OF_KIND = {"chat": "/v1/chat/completions", "completion": "/v1/completions", "embedding": "/v1/embeddings",
                 "image": "/v1/images/generations", "moderation": "/v1/moderations",
                 "chatgpt_web": "/conversation (go-chatgpt-api's routes)",
                 "sydney": "/chat/stream and /image/upload (SydneyQt's routes)",
                 "bing_image": "/image/create (SydneyQt's route)",
                 "agent": "/api/ask (ChatGPT-API-server's route)"}
_CHAT_KINDS = frozenset({"chat", "completion"})
_SERVED_BEFORE_KINDS = ("chat", "completion")  # a worker announcing no `serves` predates them

@dataclass(frozen=True)
class RoutingConfig:
    aliases: dict[str, str] = field(default_factory=dict)
    routes: tuple[tuple[str, str], ...] = ()
    default_pool: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RoutingConfig:
        table: dict[str, Any] = load_toml("SWITCHYARD_CONFIG", env).get("routing", {})
        aliases = {str(k): str(v) for k, v in (table.get("aliases") or {}).items()}
        routes: list[tuple[str, str]] = []
        for i, entry in enumerate(table.get("routes") or []):
            if not isinstance(entry, dict) or not entry.get("match") or not entry.get("pool"):
                raise ConfigError(f"SWITCHYARD_CONFIG routing.routes[{i}] needs both 'match' and 'pool'")
            routes.append((str(entry["match"]), _pool("SWITCHYARD_CONFIG routing.routes", str(entry["pool"]))))
        for name in ("SY_ALIASES", "SY_ROUTES"):
            for item in env_list(name, env):
                key, sep, target = item.partition("=")
                if not sep or not key.strip() or not target.strip():
                    raise ConfigError(f"{name} entries must look like name=target, got {item!r}")
                if name == "SY_ALIASES":
                    aliases[key.strip()] = target.strip()
                else:
                    routes.append((key.strip(), _pool(name, target.strip())))
        default_pool = env_str("SY_DEFAULT_POOL", str(table.get("default_pool") or ""), env).strip()
        if default_pool:
            _pool("SY_DEFAULT_POOL", default_pool)
        return cls(aliases=aliases, routes=tuple(routes), default_pool=default_pool)


def _pool(variable: str, pool: str) -> str:
    try:
        return proto.check_token(pool)
    except ValueError:
        raise ConfigError(f"{variable}: pool names are letters, digits, '_' and '-', got {pool!r}") from None


@dataclass(frozen=True)
class Route:
    model: str  # what the worker sends upstream (alias resolved)
    pool: str
    features: frozenset[str]


@dataclass
class _Replica:
    announce: Announce
    expires: float


# What a pool can do when none of its replicas has told us yet (scale from zero): the least.
_DEFAULT_FEATURES = frozenset({"chat"})


class RoutingTable:
    def __init__(self, config: RoutingConfig) -> None:
        self.config = config
        self._replicas: dict[str, _Replica] = {}
        self._pool_features: dict[str, frozenset[str]] = {}  # last seen, kept after replicas leave
        # live_models() runs on every request: its answer is kept until a replica announces,
        # leaves, or its announcement expires (with many replicas and models, a rebuild is costly)
        self._models: dict[str, str] | None = None
        self._by_kind: dict[tuple[str, str], str] = {}  # (model, kind) -> pool, rebuilt with _models
        self._kinds: dict[str, tuple[str, ...]] = {}  # model -> the kinds live replicas serve it for
        self._models_until = 0.0
        self._accounts: dict[str, AccountsState] = {}

    def observe(self, announce: Announce, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        proto.check_token(announce["pool"])
        if announce.get("draining"):
            self._replicas.pop(announce["worker_id"], None)
        else:
            self._replicas[announce["worker_id"]] = _Replica(announce, now + float(announce["ttl"]))
        self._pool_features[announce["pool"]] = frozenset(announce["features"])
        if "accounts" in announce:
            self._accounts[announce["pool"]] = announce["accounts"]
        self._models = None

    def accounts(self, pool: str) -> AccountsState | None:
        """The latest state of a pool of upstream accounts, as its newest announcement told it
        (every replica reads the same shared pool); None for a pool without accounts."""
        return self._accounts.get(pool)

    def live_accounts(self, pool: str) -> tuple[int, int]:
        """(replicas, accounts) summed over the pool's live replicas, for pools whose replicas each
        hold accounts of their own (agent-bridge: the agents connected to it)."""
        replicas = accounts = 0
        for announce in self._live():
            if announce["pool"] == pool:
                replicas += 1
                accounts += announce.get("accounts", {"total": 0})["total"]
        return replicas, accounts

    def pool_for_kind(self, kind: str) -> tuple[str, str] | None:
        """(model, pool) of some live model served for `kind`: for routes that name no model
        (go-chatgpt-api's conversation list, say), any model of the pool that speaks them."""
        self.live_models()
        return next(((m, p) for (m, k), p in sorted(self._by_kind.items()) if k == kind), None)

    def _live(self, now: float | None = None) -> list[Announce]:
        now = time.monotonic() if now is None else now
        expired = [k for k, r in self._replicas.items() if r.expires < now]
        for key in expired:
            del self._replicas[key]
        return [r.announce for r in self._replicas.values()]

    def live_models(self) -> dict[str, str]:
        """model id → pool, for models some live replica serves (shared: do not modify)."""
        now = time.monotonic()
        if self._models is not None and now < self._models_until:
            return self._models
        models: dict[str, str] = {}
        by_kind: dict[tuple[str, str], str] = {}
        kinds: dict[str, set[str]] = {}
        for announce in self._live(now):
            serves: Mapping[str, Sequence[str]] = announce.get("serves") or dict.fromkeys(
                announce["models"], _SERVED_BEFORE_KINDS)
            for model, model_kinds in serves.items():
                models.setdefault(model, announce["pool"])
                kinds.setdefault(model, set()).update(model_kinds)
                for kind in model_kinds:
                    by_kind.setdefault((model, kind), announce["pool"])
        self._by_kind = by_kind
        self._kinds = {model: tuple(k for k in proto.KINDS if k in found) for model, found in kinds.items()}
        self._models = models
        self._models_until = min((r.expires for r in self._replicas.values()), default=float("inf"))
        return models

    def live_capacity(self, pool: str) -> tuple[int, int]:
        """(capacity, in_flight) summed over the pool's live replicas."""
        capacity = in_flight = 0
        for announce in self._live():
            if announce["pool"] == pool:
                capacity += announce["capacity"]
                in_flight += announce["in_flight"]
        return capacity, in_flight

    def live_kinds(self, model: str) -> tuple[str, ...]:
        """The kinds live replicas serve `model` for (in proto.KINDS order); () if none."""
        self.live_models()
        return self._kinds.get(model, ())

    def listed_models(self) -> list[tuple[str, str, tuple[str, ...]]]:
        """(id, owner, kinds) for /v1/models: live models, plus aliases whose target is live."""
        live = self.live_models()
        listed = [(model, pool, self._kinds[model]) for model, pool in sorted(live.items())]
        listed += [(alias, live[target], self._kinds[target])
                   for alias, target in sorted(self.config.aliases.items()) if target in live]
        return listed

    def models_for(self, kind: str) -> list[str]:
        """The live models serving `kind`, sorted."""
        self.live_models()
        return sorted(model for model, k in self._by_kind if k == kind)

    def resolve(self, requested: str, kind: str = "chat") -> Route:
        model = self.config.aliases.get(requested, requested)
        live = self.live_models()
        pool = self._by_kind.get((model, kind))
        if pool is None and kind == "completion":
            pool = self._by_kind.get((model, "chat"))  # the edge turns each prompt into a chat
        if pool is None and model in live:
            served = ", ".join(ROUTE_OF_KIND[k] for k in self._kinds[model])
            raise InvalidRequest(
                f"The model '{requested}' does not serve {ROUTE_OF_KIND[kind]}; it serves {served}.",
                param="model", code="model_not_supported",
            )
        if pool is None:
            pool = next((p for pattern, p in self.config.routes if fnmatch.fnmatchcase(model, pattern)), None)
        if pool is None and kind in _CHAT_KINDS:
            pool = self.config.default_pool or None
        if pool is None:
            raise ModelNotFound(requested)
        return Route(model=model, pool=pool, features=self._pool_features.get(pool, _DEFAULT_FEATURES))
