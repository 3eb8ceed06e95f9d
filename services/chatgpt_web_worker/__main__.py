"""chatgpt-web-worker: OpenAI chat and go-chatgpt-api's routes on a shared pool of ChatGPT web accounts.

    python -m services.chatgpt_web_worker

Env: NATS_URL, WORKER_POOL (default "chatgpt-web"), WORKER_CAPACITY (default: the number of
accounts; more never helps, an account takes one turn at a time), PORT (probes and /metrics),
CHATGPT_* and GO_CHATGPT_API_PROXY (services/chatgpt_web_worker/config.py), HTTPS_PROXY /
HTTP_PROXY, SY_TIMEOUT_* and SY_TIME_SCALE (libs/timeouts.py).
"""

from __future__ import annotations

import uvloop

from libs.logs import config_errors_exit, setup_logging
from libs.settings import env_str
from libs.worker_main import WorkerProcessSettings, exit_on_start_failure, run_worker
from services.chatgpt_web_worker.backend import ChatGPTWebBackend
from services.chatgpt_web_worker.config import load_config

SERVICE = "chatgpt-web-worker"


def main() -> None:
    with config_errors_exit(SERVICE):
        setup_logging(SERVICE, env_str("LOG_LEVEL", "INFO"))
        config = load_config()
        settings = WorkerProcessSettings.from_env(default_pool="chatgpt-web", default_capacity=len(config.accounts))
    exit_on_start_failure(lambda: uvloop.run(run_worker(
        SERVICE, settings, lambda metrics: ChatGPTWebBackend(
            config, metrics, pool=settings.pool, worker_id=settings.worker_id, capacity=settings.capacity))))


if __name__ == "__main__":
    main()
