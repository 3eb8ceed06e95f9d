"""Model → worker pool routing: a static table from configuration plus what live workers announce.

Resolution order for a requested model:
1. aliases (`SY_ALIASES="gpt4=gpt-4o,fast=sandbox-fast"`): the alias is replaced by its target;
2. a model a live worker announced: its pool;
3. static routes (`SY_ROUTES="gpt-*=openai,llama*=openai"`, fnmatch patterns, first match wins):
   queued even while the pool has no live replica, so workers can scale from zero;
4. the default chat pool (`SY_DEFAULT_POOL`), if set;
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
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import proto
from libs.errors import ModelNotFound
from libs.settings import ConfigError, env_list, env_str, load_toml
from proto.messages import Announce


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
        self._models_until = 0.0

    def observe(self, announce: Announce, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        proto.check_token(announce["pool"])
        if announce.get("draining"):
            self._replicas.pop(announce["worker_id"], None)
        else:
            self._replicas[announce["worker_id"]] = _Replica(announce, now + float(announce["ttl"]))
        self._pool_features[announce["pool"]] = frozenset(announce["features"])
        self._models = None

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
        for announce in self._live(now):
            for model in announce["models"]:
                models.setdefault(model, announce["pool"])
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

    def listed_models(self) -> list[tuple[str, str]]:
        """(id, owner) for /v1/models: live models, plus aliases whose target is live."""
        live = self.live_models()
        listed = [(model, pool) for model, pool in sorted(live.items())]
        listed += [(alias, live[target]) for alias, target in sorted(self.config.aliases.items()) if target in live]
        return listed

    def resolve(self, requested: str) -> Route:
        model = self.config.aliases.get(requested, requested)
        live = self.live_models()
        pool = live.get(model)
        if pool is None:
            pool = next((p for pattern, p in self.config.routes if fnmatch.fnmatchcase(model, pattern)), None)
        if pool is None:
            pool = self.config.default_pool or None
        if pool is None:
            raise ModelNotFound(requested)
        return Route(model=model, pool=pool, features=self._pool_features.get(pool, _DEFAULT_FEATURES))
