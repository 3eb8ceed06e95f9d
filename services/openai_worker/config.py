"""Which OpenAI-compatible upstreams this worker forwards to, from env vars or a TOML file.

One upstream: OPENAI_BASE_URL, OPENAI_API_KEY, OPENAI_MODELS (comma list of model ids).
Several: OPENAI_WORKER_CONFIG names a TOML file:

    [[upstreams]]
    name = "primary"
    base_url = "https://api.example.com/v1"
    api_key = "sk-..."
    models = ["gpt-4o", "gpt-4o-mini"]
    proxy = "http://proxy:3128"      # optional; else HTTPS_PROXY / HTTP_PROXY apply
    native_n = true                  # the upstream honours n > 1 (else the edge fans out)
    completions = true               # the upstream has /v1/completions
    stream_usage = true              # the upstream accepts stream_options.include_usage
    whole_answers = true             # non-stream requests go upstream non-streamed (false: streamed)

Upstreams serving the same model are failed over in order (rotating the first) before the first
token of an answer.

A non-stream request is sent upstream non-streamed (`whole_answers`): one JSON answer instead of
an event per token is less work on both sides and carries the upstream's exact usage. Such a call
is bounded by the total time limit only, since a whole answer takes as long as the generation;
`whole_answers = false` streams them upstream too, under the first-token and idle limits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from libs.settings import ConfigError, env_list, env_str, load_toml


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

    def __repr__(self) -> str:  # never print the key
        return f"Upstream(name={self.name!r}, base_url={self.base_url!r}, models={self.models!r})"


def _from_table(index: int, table: dict[str, Any]) -> Upstream:
    where = f"OPENAI_WORKER_CONFIG upstreams[{index}]"
    base_url = table.get("base_url")
    models = table.get("models")
    if not isinstance(base_url, str) or not base_url:
        raise ConfigError(f"{where}.base_url must be a URL")
    if not isinstance(models, list) or not models or not all(isinstance(m, str) for m in models):
        raise ConfigError(f"{where}.models must be a non-empty list of model ids")
    return Upstream(
        name=str(table.get("name") or f"upstream{index}"),
        base_url=base_url.rstrip("/"),
        api_key=str(table.get("api_key") or ""),
        models=tuple(models),
        proxy=table.get("proxy") or None,
        native_n=bool(table.get("native_n", True)),
        completions=bool(table.get("completions", True)),
        stream_usage=bool(table.get("stream_usage", True)),
        whole_answers=bool(table.get("whole_answers", True)),
    )


def load_upstreams(env: Mapping[str, str] | None = None) -> list[Upstream]:
    upstreams = [_from_table(i, t) for i, t in enumerate(load_toml("OPENAI_WORKER_CONFIG", env).get("upstreams", []))]
    base_url = env_str("OPENAI_BASE_URL", "", env).strip()
    if base_url:
        models = env_list("OPENAI_MODELS", env)
        if not models:
            raise ConfigError("OPENAI_MODELS must list the model ids served at OPENAI_BASE_URL")
        upstreams.insert(0, Upstream(
            name="env", base_url=base_url.rstrip("/"), api_key=env_str("OPENAI_API_KEY", "", env),
            models=tuple(models),
        ))
    if not upstreams:
        raise ConfigError("no upstream configured: set OPENAI_BASE_URL and OPENAI_MODELS, or OPENAI_WORKER_CONFIG")
    return upstreams
