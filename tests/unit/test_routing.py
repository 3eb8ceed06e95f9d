"""services.edge.routing: static configuration plus live announcements → a pool per model."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from libs.errors import InvalidRequest, ModelNotFound
from libs.settings import ConfigError
from proto.messages import Announce, Feature, Kind
from services.edge.routing import Route, RoutingConfig, RoutingTable


def announce(
    worker_id: str = "w1",
    pool: str = "openai",
    models: list[str] | None = None,
    *,
    features: list[Feature] | None = None,
    ttl: float = 30.0,
    draining: bool = False,
    capacity: int = 4,
    in_flight: int = 0,
    serves: list[Kind] | None = None,
) -> Announce:
    serves = ["chat", "completion"] if serves is None else serves
    return {
        "type": "announce",
        "worker_id": worker_id,
        "pool": pool,
        "models": ["gpt-4o"] if models is None else models,
        "serves": dict.fromkeys(["gpt-4o"] if models is None else models, serves),
        "capacity": capacity,
        "in_flight": in_flight,
        "draining": draining,
        "features": ["chat"] if features is None else features,
        "ttl": ttl,
    }


# ---- RoutingConfig.from_env ----------------------------------------------------------------


def test_empty_env_gives_empty_config() -> None:
    assert RoutingConfig.from_env({}) == RoutingConfig(aliases={}, routes=(), default_pool="")


def test_env_routes_aliases_and_default_pool() -> None:
    config = RoutingConfig.from_env(
        {
            "SY_ROUTES": " gpt-*=openai , llama*=local,, ",
            "SY_ALIASES": "gpt4=gpt-4o, fast = sandbox-fast",
            "SY_DEFAULT_POOL": " fallback ",
        }
    )
    assert config.routes == (("gpt-*", "openai"), ("llama*", "local"))
    assert config.aliases == {"gpt4": "gpt-4o", "fast": "sandbox-fast"}
    assert config.default_pool == "fallback"


def test_alias_target_may_contain_equals_sign() -> None:
    config = RoutingConfig.from_env({"SY_ALIASES": "x=a=b"})
    assert config.aliases == {"x": "a=b"}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SY_ROUTES", "gpt-*"),
        ("SY_ROUTES", "gpt-*=openai,llama"),
        ("SY_ROUTES", "=openai"),
        ("SY_ROUTES", "gpt-*= "),
        ("SY_ALIASES", "gpt4"),
        ("SY_ALIASES", "gpt4="),
        ("SY_ALIASES", " =gpt-4o"),
    ],
)
def test_malformed_entries_raise_config_error_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        RoutingConfig.from_env({name: value})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SY_ROUTES", "gpt-*=open.ai"),
        ("SY_DEFAULT_POOL", "a*"),
    ],
)
def test_invalid_pool_names_raise_config_error_naming_the_variable(name: str, value: str) -> None:
    """A pool must be one subject token; a bad one is a configuration error like any other, and
    (libs/settings.py) configuration errors name the variable at fault."""
    with pytest.raises(ConfigError, match=name):
        RoutingConfig.from_env({name: value})


def write_config(tmp_path: Path, text: str) -> dict[str, str]:
    path = tmp_path / "switchyard.toml"
    path.write_text(text)
    return {"SWITCHYARD_CONFIG": str(path)}


def test_toml_routing_table(tmp_path: Path) -> None:
    env = write_config(
        tmp_path,
        """
[routing]
default_pool = "fallback"
aliases = { gpt4 = "gpt-4o", fast = "sandbox-fast" }
routes = [ { match = "gpt-*", pool = "openai" }, { match = "sandbox-*", pool = "sandbox" } ]
""",
    )
    config = RoutingConfig.from_env(env)
    assert config.aliases == {"gpt4": "gpt-4o", "fast": "sandbox-fast"}
    assert config.routes == (("gpt-*", "openai"), ("sandbox-*", "sandbox"))
    assert config.default_pool == "fallback"


def test_toml_combined_with_env(tmp_path: Path) -> None:
    env = write_config(
        tmp_path,
        """
[routing]
default_pool = "fallback"
aliases = { gpt4 = "gpt-4o" }
routes = [ { match = "gpt-*", pool = "openai" } ]
""",
    )
    env |= {"SY_ROUTES": "llama*=local", "SY_ALIASES": "gpt4=gpt-4o-mini,small=llama-3", "SY_DEFAULT_POOL": "other"}
    config = RoutingConfig.from_env(env)
    assert config.routes == (("gpt-*", "openai"), ("llama*", "local"))
    assert config.aliases == {"gpt4": "gpt-4o-mini", "small": "llama-3"}
    assert config.default_pool == "other"


def test_toml_without_routing_table(tmp_path: Path) -> None:
    env = write_config(tmp_path, '[other]\nkey = "value"\n')
    assert RoutingConfig.from_env(env) == RoutingConfig()


@pytest.mark.parametrize(
    "text",
    [
        "[routing\n",
        '[routing]\nroutes = [ { match = "gpt-*" } ]\n',
        '[routing]\nroutes = [ { pool = "openai" } ]\n',
        '[routing]\nroutes = [ { match = "x*", pool = "bad.pool" } ]\n',
    ],
)
def test_malformed_toml_raises_config_error_naming_the_variable(tmp_path: Path, text: str) -> None:
    env = write_config(tmp_path, text)
    with pytest.raises(ConfigError, match="SWITCHYARD_CONFIG"):
        RoutingConfig.from_env(env)


def test_missing_toml_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="SWITCHYARD_CONFIG"):
        RoutingConfig.from_env({"SWITCHYARD_CONFIG": str(tmp_path / "nope.toml")})


# ---- RoutingTable --------------------------------------------------------------------------


def table(**config: Any) -> RoutingTable:
    return RoutingTable(RoutingConfig(**config))


def test_live_models_from_announcements() -> None:
    routing = table()
    routing.observe(announce("w1", "openai", ["gpt-4o", "gpt-4o-mini"]))
    routing.observe(announce("w2", "sandbox", ["sandbox-fast"]))
    assert routing.live_models() == {"gpt-4o": "openai", "gpt-4o-mini": "openai", "sandbox-fast": "sandbox"}


def test_first_pool_announcing_a_model_wins() -> None:
    routing = table()
    routing.observe(announce("w1", "a", ["m"]))
    routing.observe(announce("w2", "b", ["m"]))
    assert routing.live_models() == {"m": "a"}


def test_reannouncement_replaces_the_replica() -> None:
    routing = table()
    routing.observe(announce("w1", "openai", ["old"]))
    routing.observe(announce("w1", "openai", ["new"]))
    assert routing.live_models() == {"new": "openai"}


def test_announcements_expire_after_ttl() -> None:
    routing = table()
    now = time.monotonic()
    routing.observe(announce("old", "p1", ["stale-model"], ttl=5), now=now - 10)
    routing.observe(announce("fresh", "p2", ["fresh-model"], ttl=5), now=now)
    routing.observe(announce("long", "p3", ["long-model"], ttl=60), now=now - 30)
    assert routing.live_models() == {"fresh-model": "p2", "long-model": "p3"}
    # expired replicas are forgotten for good
    assert "old" not in routing._replicas


def test_announcement_lives_until_its_ttl() -> None:
    routing = table()
    routing.observe(announce("w", "p", ["m"], ttl=3600))
    assert routing.live_models() == {"m": "p"}
    routing.observe(announce("w", "p", ["m"], ttl=0.5), now=time.monotonic() - 1)
    assert routing.live_models() == {}


def test_draining_replica_is_removed() -> None:
    routing = table()
    routing.observe(announce("w1", "openai", ["gpt-4o"]))
    routing.observe(announce("w2", "openai", ["gpt-4o", "o1"]))
    routing.observe(announce("w2", "openai", ["gpt-4o", "o1"], draining=True))
    assert routing.live_models() == {"gpt-4o": "openai"}
    routing.observe(announce("w1", "openai", ["gpt-4o"], draining=True))
    assert routing.live_models() == {}


def test_draining_unknown_replica_is_harmless() -> None:
    routing = table()
    routing.observe(announce("ghost", draining=True))
    assert routing.live_models() == {}


def test_observe_rejects_invalid_pool() -> None:
    with pytest.raises(ValueError):
        table().observe(announce(pool="a.b"))


def test_live_capacity_sums_live_replicas_of_the_pool() -> None:
    routing = table()
    now = time.monotonic()
    routing.observe(announce("w1", "p", capacity=4, in_flight=1), now=now)
    routing.observe(announce("w2", "p", capacity=2, in_flight=2), now=now)
    routing.observe(announce("w3", "q", capacity=8, in_flight=3), now=now)
    routing.observe(announce("w4", "p", capacity=100, in_flight=0, ttl=1), now=now - 10)
    assert routing.live_capacity("p") == (6, 3)
    assert routing.live_capacity("q") == (8, 3)
    assert routing.live_capacity("none") == (0, 0)


@pytest.mark.parametrize(
    ("requested", "expected"),
    [
        # 1. alias → its target, then routed like the target
        ("gpt4", Route("gpt-4o", "live-pool", frozenset({"chat", "n"}))),
        ("cheap", Route("llama-3", "local", frozenset({"chat"}))),
        # 2. a live model beats a static pattern matching it
        ("gpt-4o", Route("gpt-4o", "live-pool", frozenset({"chat", "n"}))),
        # 3. static patterns, first match wins
        ("gpt-3.5", Route("gpt-3.5", "static-gpt", frozenset({"chat"}))),
        ("llama-3", Route("llama-3", "local", frozenset({"chat"}))),
        ("gpt-x-llama", Route("gpt-x-llama", "static-gpt", frozenset({"chat"}))),
        # 4. default pool
        ("anything", Route("anything", "fallback", frozenset({"chat"}))),
    ],
)
def test_resolve_order(requested: str, expected: Route) -> None:
    routing = table(
        aliases={"gpt4": "gpt-4o", "cheap": "llama-3"},
        routes=(("gpt-*", "static-gpt"), ("*llama*", "local")),
        default_pool="fallback",
    )
    routing.observe(announce("w1", "live-pool", ["gpt-4o"], features=["chat", "n"]))
    assert routing.resolve(requested) == expected


def test_patterns_are_case_sensitive() -> None:
    routing = table(routes=(("gpt-*", "openai"),))
    assert routing.resolve("gpt-4").pool == "openai"
    with pytest.raises(ModelNotFound):
        routing.resolve("GPT-4")


@pytest.mark.parametrize("requested", ["unknown", "alias-to-nothing"])
def test_resolve_without_any_match_is_model_not_found(requested: str) -> None:
    routing = table(aliases={"alias-to-nothing": "ghost-model"}, routes=(("gpt-*", "openai"),))
    with pytest.raises(ModelNotFound) as info:
        routing.resolve(requested)
    err = info.value
    assert err.status == 404
    assert err.code == "model_not_found"
    assert err.param == "model"
    assert requested in err.message  # the name the client asked for, not the alias target
    assert err.body()["error"] == {
        "message": err.message,
        "type": "invalid_request_error",
        "param": "model",
        "code": "model_not_found",
    }


def test_model_served_only_by_an_expired_replica_falls_back() -> None:
    routing = table(routes=(("gpt-*", "static"),))
    routing.observe(announce("w1", "live", ["gpt-4o"], ttl=1), now=time.monotonic() - 5)
    assert routing.resolve("gpt-4o").pool == "static"
    routing2 = table()
    routing2.observe(announce("w1", "live", ["gpt-4o"], ttl=1), now=time.monotonic() - 5)
    with pytest.raises(ModelNotFound):
        routing2.resolve("gpt-4o")


def test_listed_models_includes_aliases_only_with_live_targets() -> None:
    routing = table(
        aliases={"gpt4": "gpt-4o", "dead": "ghost", "big": "o1"},
        routes=(("ghost", "static"),),
    )
    routing.observe(announce("w1", "openai", ["o1", "gpt-4o"]))
    routing.observe(announce("w2", "sandbox", ["sandbox-fast"]))
    chat = ("chat", "completion")
    assert routing.listed_models() == [
        ("gpt-4o", "openai", chat),
        ("o1", "openai", chat),
        ("sandbox-fast", "sandbox", chat),
        ("big", "openai", chat),
        ("gpt4", "openai", chat),
    ]


def test_listed_models_empty_without_live_replicas() -> None:
    routing = table(aliases={"a": "b"}, routes=(("*", "p"),), default_pool="p")
    assert routing.listed_models() == []


def test_unknown_pool_has_default_features() -> None:
    routing = table(routes=(("*", "cold"),))
    assert routing.resolve("m").features == frozenset({"chat"})


def test_features_remembered_after_replicas_leave() -> None:
    routing = table(routes=(("gpt-*", "openai"),))
    routing.observe(announce("w1", "openai", ["gpt-4o"], features=["chat", "completion", "n"]))
    routing.observe(announce("w1", "openai", ["gpt-4o"], features=["chat", "completion", "n"], draining=True))
    assert routing.live_models() == {}
    assert routing.resolve("gpt-4o") == Route("gpt-4o", "openai", frozenset({"chat", "completion", "n"}))
    # and after expiry too
    routing.observe(announce("w2", "openai", ["gpt-4o"], features=["chat", "tools"], ttl=1), now=time.monotonic() - 9)
    assert routing.resolve("gpt-4o").features == frozenset({"chat", "tools"})


def test_features_are_per_pool() -> None:
    routing = table()
    routing.observe(announce("w1", "a", ["m1"], features=["chat", "n"]))
    routing.observe(announce("w2", "b", ["m2"], features=["chat", "completion"]))
    assert routing.resolve("m1").features == frozenset({"chat", "n"})
    assert routing.resolve("m2").features == frozenset({"chat", "completion"})


def test_cached_live_models_follow_expiry_and_departures() -> None:
    routing = RoutingTable(RoutingConfig())
    routing.observe(announce("brief", "p1", ["brief-model"], ttl=0.05))
    routing.observe(announce("steady", "p2", ["steady-model"], ttl=60))
    assert routing.live_models() == {"brief-model": "p1", "steady-model": "p2"}
    assert routing.live_models() is routing.live_models()  # no rebuild while nothing changed
    time.sleep(0.06)  # the brief replica's announcement expires with no new message
    assert routing.live_models() == {"steady-model": "p2"}
    routing.observe({**announce("steady", "p2", ["steady-model"]), "draining": True})
    assert routing.live_models() == {}


def test_a_request_routes_by_model_and_kind() -> None:
    routing = table(default_pool="openai")
    routing.observe(announce("w1", "openai", ["gpt-4o"]))
    routing.observe(announce("w2", "openai", ["omni-moderation-latest"], serves=["moderation"]))
    routing.observe(announce("w3", "embeddings", ["all-MiniLM-L6-v2"], serves=["embedding"]))
    assert routing.resolve("all-MiniLM-L6-v2", "embedding").pool == "embeddings"
    assert routing.resolve("omni-moderation-latest", "moderation").pool == "openai"
    assert routing.resolve("gpt-4o", "completion").pool == "openai"  # a chat model answers completions
    assert routing.models_for("moderation") == ["omni-moderation-latest"]
    assert routing.live_kinds("all-MiniLM-L6-v2") == ("embedding",)
    with pytest.raises(InvalidRequest) as refused:
        routing.resolve("all-MiniLM-L6-v2", "chat")
    assert refused.value.code == "model_not_supported" and refused.value.param == "model"
    assert "/v1/embeddings" in refused.value.message
    # the default pool takes unknown chat models, never other kinds
    assert routing.resolve("unknown-model", "chat").pool == "openai"
    with pytest.raises(ModelNotFound):
        routing.resolve("unknown-model", "embedding")


def test_one_model_id_may_be_served_for_different_kinds_by_different_pools() -> None:
    routing = table()
    routing.observe(announce("w1", "chatpool", ["shared-id"], serves=["chat"]))
    routing.observe(announce("w2", "embedpool", ["shared-id"], serves=["embedding"]))
    assert routing.resolve("shared-id", "chat").pool == "chatpool"
    assert routing.resolve("shared-id", "embedding").pool == "embedpool"
    assert routing.live_kinds("shared-id") == ("chat", "embedding")


def test_an_announcement_without_serves_counts_as_chat() -> None:
    routing = table()
    legacy = announce("w1", "openai", ["old-model"])
    del legacy["serves"]  # type: ignore[misc]
    routing.observe(legacy)
    assert routing.resolve("old-model", "chat").pool == "openai"
    with pytest.raises(InvalidRequest):
        routing.resolve("old-model", "embedding")
