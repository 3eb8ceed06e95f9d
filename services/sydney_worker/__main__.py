"""sydney-worker: Bing Chat (Sydney) for OpenAI chat and SydneyQt's web API, on a pool of cookie accounts.

    python -m services.sydney_worker

Env: NATS_URL, WORKER_POOL (default "sydney"), WORKER_CAPACITY (default: the number of accounts,
8 with none; an account takes one turn at a time), WORKER_ID, PORT (probes and /metrics),
LOG_LEVEL; Bing and its accounts: SYDNEY_CREATE_URL, SYDNEY_CHATHUB_URL, BING_BASE_URL,
DEFAULT_COOKIES, SYDNEY_ACCOUNTS_FILE, HTTPS_PROXY / HTTP_PROXY (libs/bing/config.py); models:
SYDNEY_MODEL_ALIASES (services/sydney_worker/config.py); SY_TIMEOUT_* and SY_TIME_SCALE
(libs/timeouts.py).
"""

from __future__ import annotations

import uvloop

from libs.logs import config_errors_exit, setup_logging
from libs.settings import env_str
from libs.worker_main import WorkerProcessSettings, exit_on_start_failure, run_worker
from services.sydney_worker.backend import SydneyBackend
from services.sydney_worker.config import load_config

SERVICE = "sydney-worker"
CAPACITY_WITHOUT_ACCOUNTS = 8  # turns on callers' own cookies at once, when there is no pool to bound them


def main() -> None:
    with config_errors_exit(SERVICE):
        setup_logging(SERVICE, env_str("LOG_LEVEL", "INFO"))
        config = load_config()
        settings = WorkerProcessSettings.from_env(
            default_pool="sydney", default_capacity=len(config.bing.accounts) or CAPACITY_WITHOUT_ACCOUNTS)
    exit_on_start_failure(lambda: uvloop.run(run_worker(
        SERVICE, settings, lambda metrics: SydneyBackend(
            config, metrics, worker_id=settings.worker_id, capacity=settings.capacity))))


if __name__ == "__main__":
    main()
