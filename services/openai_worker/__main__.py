"""openai-worker: forwards chat, completions and moderation jobs to OpenAI-compatible upstreams.

    python -m services.openai_worker

Env: NATS_URL, WORKER_POOL (default "openai"), WORKER_CAPACITY, PORT (probes and /metrics),
OPENAI_BASE_URL / OPENAI_API_KEY / OPENAI_MODELS / OPENAI_MODERATION_MODELS or OPENAI_WORKER_CONFIG
(libs/openai_upstream/config.py),
HTTPS_PROXY / HTTP_PROXY, SY_TIMEOUT_* and SY_TIME_SCALE (libs/timeouts.py).
"""

from __future__ import annotations

import uvloop

from libs.logs import config_errors_exit, setup_logging
from libs.settings import env_str
from libs.worker_main import WorkerProcessSettings, exit_on_start_failure, run_worker
from services.openai_worker.backend import OpenAIBackend
from services.openai_worker.config import load_upstreams

SERVICE = "openai-worker"


def main() -> None:
    with config_errors_exit(SERVICE):
        setup_logging(SERVICE, env_str("LOG_LEVEL", "INFO"))
        settings = WorkerProcessSettings.from_env(default_pool="openai")
        upstreams = load_upstreams()
    exit_on_start_failure(lambda: uvloop.run(run_worker(
        SERVICE, settings, lambda metrics: OpenAIBackend(upstreams, metrics))))


if __name__ == "__main__":
    main()
