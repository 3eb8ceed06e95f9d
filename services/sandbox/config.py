"""Sandbox settings, read from the environment once at start-up (never at import)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_MODELS = ("sandbox-chat", "sandbox-fast")
# Models of the other endpoints, listed apart: a chat model name must not answer /v1/embeddings, and
# these (unlike chat, which answers any model name) are checked, 404 model_not_found as OpenAI does.
# An embedding entry may carry its width, `name=DIM` (see embeddings.py for the built-in widths).
DEFAULT_EMBEDDING_MODELS: tuple[tuple[str, int | None], ...] = (
    ("sandbox-embedding", None), ("text-embedding-3-small", None), ("intfloat/e5-large-v2", None)
)  # (name, width or None for the built-in width)
MAX_EMBEDDING_DIM = 8192
DEFAULT_IMAGE_MODELS = ("sandbox-image", "stabilityai/stable-diffusion-xl-base-1.0", "dall-e-3")
DEFAULT_MODERATION_MODELS = ("omni-moderation-latest", "text-moderation-latest")
# The ChatGPT web fake (chatgpt/): the model slugs it serves and its access tokens' lifetime.
DEFAULT_CHATGPT_MODELS = ("auto", "gpt-4o", "gpt-4o-mini", "o1", "text-davinci-002-render-sha")
DEFAULT_CHATGPT_TOKEN_TTL = 3600
DEFAULT_BING_CONVERSATION_TTL = 6 * 3600  # Bing's "Conversations expire after 06:00:00."


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8090
    api_key: str | None = None  # None: /v1 is open
    models: tuple[str, ...] = DEFAULT_MODELS
    embedding_models: tuple[tuple[str, int | None], ...] = DEFAULT_EMBEDDING_MODELS
    image_models: tuple[str, ...] = DEFAULT_IMAGE_MODELS
    moderation_models: tuple[str, ...] = DEFAULT_MODERATION_MODELS  # the first is the default model
    tls_cert: str | None = None  # PEM paths: serve HTTPS, as real providers do (tests of TLS upstreams)
    tls_key: str | None = None
    chatgpt_models: tuple[str, ...] = DEFAULT_CHATGPT_MODELS
    chatgpt_token_ttl: int = DEFAULT_CHATGPT_TOKEN_TTL  # seconds; /api/auth/session mints tokens this long
    bing_conversation_ttl: int = DEFAULT_BING_CONVERSATION_TTL  # seconds before a Bing conversation expires

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        return cls(
            host=env.get("SANDBOX_HOST") or "127.0.0.1",
            port=_port(env.get("PORT") or "8090"),
            api_key=env.get("SANDBOX_API_KEY") or None,
            models=_names(env, "SANDBOX_MODELS") or DEFAULT_MODELS,
            embedding_models=_embedding_models(env) or DEFAULT_EMBEDDING_MODELS,
            image_models=_names(env, "SANDBOX_IMAGE_MODELS") or DEFAULT_IMAGE_MODELS,
            moderation_models=_names(env, "SANDBOX_MODERATION_MODELS") or DEFAULT_MODERATION_MODELS,
            tls_cert=env.get("SANDBOX_TLS_CERT") or None,
            tls_key=env.get("SANDBOX_TLS_KEY") or None,
            chatgpt_models=_names(env, "SANDBOX_CHATGPT_MODELS") or DEFAULT_CHATGPT_MODELS,
            chatgpt_token_ttl=_seconds(env, "SANDBOX_CHATGPT_TOKEN_TTL", DEFAULT_CHATGPT_TOKEN_TTL),
            bing_conversation_ttl=_seconds(env, "SANDBOX_BING_CONVERSATION_TTL", DEFAULT_BING_CONVERSATION_TTL),
        )

    def listed_models(self) -> tuple[str, ...]:
        """Every model /v1/models shows: chat first, then embeddings, images and moderations."""
        embedding = tuple(name for name, _ in self.embedding_models)
        return self.models + embedding + self.image_models + self.moderation_models


def _names(env: Mapping[str, str], key: str) -> tuple[str, ...]:
    return tuple(m.strip() for m in env.get(key, "").split(",") if m.strip())


def _embedding_models(env: Mapping[str, str]) -> tuple[tuple[str, int | None], ...]:
    out: list[tuple[str, int | None]] = []
    for entry in _names(env, "SANDBOX_EMBEDDING_MODELS"):
        name, sep, dim = (part.strip() for part in entry.partition("="))
        if not name or (sep and not (dim.isdigit() and 1 <= int(dim) <= MAX_EMBEDDING_DIM)):
            raise ValueError(
                f"SANDBOX_EMBEDDING_MODELS entries are `name` or `name=DIM` (1..{MAX_EMBEDDING_DIM}), got {entry!r}"
            )
        out.append((name, int(dim) if sep else None))
    return tuple(out)


def _port(raw: str) -> int:
    if not raw.strip().isdigit() or int(raw) > 65535:
        raise ValueError(f"PORT must be a TCP port number, got {raw!r}")
    return int(raw)


def _seconds(env: Mapping[str, str], key: str, default: int) -> int:
    raw = env.get(key, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"{key} must be a whole number of seconds >= 1, got {raw!r}")
    return int(raw)
