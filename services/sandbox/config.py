"""Sandbox settings, read from the environment once at start-up (never at import)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

DEFAULT_MODELS = ("sandbox-chat", "sandbox-fast")


@dataclass(frozen=True, slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8090
    api_key: str | None = None  # None: /v1 is open
    models: tuple[str, ...] = DEFAULT_MODELS
    tls_cert: str | None = None  # PEM paths: serve HTTPS, as real providers do (tests of TLS upstreams)
    tls_key: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        models = tuple(m.strip() for m in env.get("SANDBOX_MODELS", "").split(",") if m.strip())
        return cls(
            host=env.get("SANDBOX_HOST") or "127.0.0.1",
            port=_port(env.get("PORT") or "8090"),
            api_key=env.get("SANDBOX_API_KEY") or None,
            models=models or DEFAULT_MODELS,
            tls_cert=env.get("SANDBOX_TLS_CERT") or None,
            tls_key=env.get("SANDBOX_TLS_KEY") or None,
        )


def _port(raw: str) -> int:
    if not raw.strip().isdigit() or int(raw) > 65535:
        raise ValueError(f"PORT must be a TCP port number, got {raw!r}")
    return int(raw)
