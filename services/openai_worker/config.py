"""openai-worker's upstreams: libs/openai_upstream/config.py under the OPENAI_ prefix
(OPENAI_BASE_URL, OPENAI_API_KEY, OPENAI_MODELS, OPENAI_MODERATION_MODELS, OPENAI_WORKER_CONFIG),
with moderations."""

from __future__ import annotations

from collections.abc import Mapping

from libs.openai_upstream.config import Upstream
from libs.openai_upstream.config import load_upstreams as _load

__all__ = ["Upstream", "load_upstreams"]


def load_upstreams(env: Mapping[str, str] | None = None) -> list[Upstream]:
    return _load(env, "OPENAI", moderation=True)
