"""agent-bridge's settings: AGENT_MODELS and the seed's limits, scaled by SY_TIME_SCALE."""

from __future__ import annotations

from dataclasses import dataclass

from libs.agents.handshake import REGISTRATION_TIMEOUT
from libs.agents.pending import JOB_TIMEOUT, PING_TIMEOUT
from libs.settings import ConfigError, env_float, env_list


@dataclass(frozen=True)
class BridgeConfig:
    models: tuple[str, ...]
    ping_timeout: float
    job_timeout: float
    registration_timeout: float

    @classmethod
    def from_env(cls) -> BridgeConfig:
        scale = env_float("SY_TIME_SCALE", 1.0)
        models = tuple(env_list("AGENT_MODELS")) or ("chatgpt-agent",)
        for model in models:
            if not model or any(c.isspace() for c in model):
                raise ConfigError(f"AGENT_MODELS: not a model name: {model!r}")
        return cls(models=models, ping_timeout=PING_TIMEOUT * scale, job_timeout=JOB_TIMEOUT * scale,
                   registration_timeout=REGISTRATION_TIMEOUT * scale)
