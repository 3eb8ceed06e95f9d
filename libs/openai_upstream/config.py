"""Which OpenAI-compatible upstreams a worker calls, from env vars or a TOML file.

Every worker kind reads the same shape under its own prefix (`load_upstreams(prefix=...)`):
openai-worker `OPENAI`, embeddings-worker `EMBEDDINGS`, image-worker `IMAGES`.
One upstream: {prefix}_BASE_URL, {prefix}_API_KEY, {prefix}_MODELS (comma list of model ids).
Several: {prefix}_WORKER_CONFIG names a TOML file:

    [[upstreams]]
    name = "primary"
    base_url = "https://api.example.com/v1"
    api_key = "sk-..."
    models = ["gpt-4o", "gpt-4o-mini"]
    proxy = "http://proxy:3128"      # optional; else HTTPS_PROXY / HTTP_PROXY apply
    connect_timeout = 10             # seconds to open a connection (every attempt)
    first_byte_timeout = 15          # streamed call: seconds until the response head
    answer_timeout = 120             # whole (non-stream) answer: seconds until it arrives
    cooldown = 30                    # a hung upstream is tried last for this long (doubling, 8x at most)
    # openai-worker only (chat and completions):
    native_n = true                  # the upstream honours n > 1 (else the edge fans out)
    completions = true               # the upstream has /v1/completions
    stream_usage = true              # the upstream accepts stream_options.include_usage
    whole_answers = true             # non-stream requests go upstream non-streamed (false: streamed)
    moderation_models = ["omni-moderation-latest"]  # answered on POST {base_url}/moderations

openai-worker also reads OPENAI_MODERATION_MODELS (comma list) for the env upstream; there an
upstream may serve moderations only (`models` empty). The chat-only keys stay in the one
`Upstream` for every worker: one table shape and one parser, and a key a worker has no use for
changes nothing it does.

Upstreams serving the same model are failed over in order (rotating the first) before the first
token of an answer: on an error status, a refused connection, or an attempt that hangs. Each
attempt has its own limits, shorter than the job's: `connect_timeout`, then `first_byte_timeout`
for the response head of a streamed call (servers send it as the stream starts) or
`answer_timeout` for a whole answer (its head comes only once the whole generation is done, so
it gets a limit of its own). The head limits are failover triggers: they apply while another
upstream of the model is left to try; the last one is bounded by the job's own limits (first
token, total), so a lone upstream's long answer is never cut by a guess. An upstream that hung
is put aside for `cooldown` seconds (doubling while it keeps hanging): later requests try it last.
All these durations are scaled by SY_TIME_SCALE like every other time limit.

A non-stream request is sent upstream non-streamed (`whole_answers`): one JSON answer instead of
an event per token is less work on both sides and carries the upstream's exact usage. Such a call
is bounded by the total time limit only, since a whole answer takes as long as the generation;
`whole_answers = false` streams them upstream too, under the first-token and idle limits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from libs.settings import ConfigError, env_float, env_list, env_str, load_toml

# name -> default seconds, before SY_TIME_SCALE
_LIMITS = {"connect_timeout": 10.0, "first_byte_timeout": 15.0, "answer_timeout": 120.0, "cooldown": 30.0}


@dataclass(frozen=True)
class Upstream:
    name: str
    base_url: str
    api_key: str
    models: tuple[str, ...]
    proxy: str | None = None
    native_n: bool = True
    completions: bool = True
    stream_usage: bool = True
    whole_answers: bool = True
    connect_timeout: float = _LIMITS["connect_timeout"]
    first_byte_timeout: float = _LIMITS["first_byte_timeout"]
    answer_timeout: float = _LIMITS["answer_timeout"]
    cooldown: float = _LIMITS["cooldown"]
    moderation_models: tuple[str, ...] = ()

    def __repr__(self) -> str:  # never print the key
        return f"Upstream(name={self.name!r}, base_url={self.base_url!r}, models={self.models!r})"


def _limits(where: str, table: Mapping[str, Any], scale: float) -> dict[str, Any]:
    limits: dict[str, Any] = {}  # Any: spread into the dataclass
    for name, default in _LIMITS.items():
        value = table.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ConfigError(f"{where}.{name} must be a positive number of seconds")
        limits[name] = float(value) * scale
    return limits


def _model_list(where: str, table: Mapping[str, Any], key: str) -> tuple[str, ...]:
    models = table.get(key, [])
    if not isinstance(models, list) or not all(isinstance(m, str) and m for m in models):
        raise ConfigError(f"{where}.{key} must be a list of model ids")
    return tuple(models)


def _from_table(config: str, index: int, table: dict[str, Any], scale: float, moderation: bool) -> Upstream:
    where = f"{config} upstreams[{index}]"
    base_url = table.get("base_url")
    if not isinstance(base_url, str) or not base_url:
        raise ConfigError(f"{where}.base_url must be a URL")
    models = _model_list(where, table, "models")
    moderation_models = _model_list(where, table, "moderation_models")
    if moderation_models and not moderation:
        raise ConfigError(f"{where}.moderation_models: this worker answers no moderations")
    if not models and not moderation_models:
        raise ConfigError(f"{where}.models must be a non-empty list of model ids")
    return Upstream(
        name=str(table.get("name") or f"upstream{index}"),
        base_url=base_url.rstrip("/"),
        api_key=str(table.get("api_key") or ""),
        models=models,
        proxy=table.get("proxy") or None,
        native_n=bool(table.get("native_n", True)),
        completions=bool(table.get("completions", True)),
        stream_usage=bool(table.get("stream_usage", True)),
        whole_answers=bool(table.get("whole_answers", True)),
        moderation_models=moderation_models,
        **_limits(where, table, scale),
    )


def load_upstreams(
    env: Mapping[str, str] | None = None, prefix: str = "OPENAI", *, required: bool = True, moderation: bool = False,
) -> list[Upstream]:
    """The upstreams named by `{prefix}_*` (the env upstream first, then the TOML file's).

    `required=False`: none configured is allowed (a worker with a model of its own) and gives [].
    `moderation`: this worker answers moderations, so `moderation_models` (and
    `{prefix}_MODERATION_MODELS`) are read; elsewhere the TOML key is refused, not ignored.
    """
    scale = env_float("SY_TIME_SCALE", 1.0, env)
    config = f"{prefix}_WORKER_CONFIG"
    tables = load_toml(config, env).get("upstreams", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ConfigError(f"{config}: `upstreams` must be an array of tables ([[upstreams]])")
    upstreams = [_from_table(config, i, t, scale, moderation) for i, t in enumerate(tables)]
    base_url = env_str(f"{prefix}_BASE_URL", "", env).strip()
    moderation_models = env_list(f"{prefix}_MODERATION_MODELS", env) if moderation else []
    if base_url:
        models = env_list(f"{prefix}_MODELS", env)
        if not models and not moderation_models:
            raise ConfigError(f"{prefix}_MODELS must list the model ids served at {prefix}_BASE_URL")
        upstreams.insert(0, Upstream(
            name="env", base_url=base_url.rstrip("/"), api_key=env_str(f"{prefix}_API_KEY", "", env),
            models=tuple(models), moderation_models=tuple(moderation_models),
            **_limits(f"{prefix}_BASE_URL's upstream", {}, scale),
        ))
    elif moderation_models:
        raise ConfigError(f"{prefix}_MODERATION_MODELS needs {prefix}_BASE_URL: the upstream that answers them")
    if not upstreams and required:
        raise ConfigError(
            f"no upstream configured: set {prefix}_BASE_URL and {prefix}_MODELS, or {prefix}_WORKER_CONFIG")
    return upstreams
