"""A worker process whose upstream is the contract suite's fake, run exactly as a real worker's
`__main__` runs (libs/worker_main.run_worker: signals, probes, drain).

    FAKE_KIND=chat python -m tests.contract.fake_worker

Env: FAKE_KIND (chat, embedding, image, moderation, native, chatgpt_web, sydney, bing_image),
FAKE_EVENTS_FILE (where the fake writes what happened), FAKE_ACCOUNTS (play a pool of that many
one-turn accounts), FAKE_MODEL (serve this model id instead of `fake-<kind>`), and a worker's usual
NATS_URL, WORKER_POOL (default `contract-<kind>`),
WORKER_CAPACITY, WORKER_ID, PORT, SY_TIMEOUT_* and SY_TIME_SCALE.
"""

from __future__ import annotations

import uvloop

from libs.logs import config_errors_exit, setup_logging
from libs.settings import env_int, env_str
from libs.worker_main import WorkerProcessSettings, exit_on_start_failure, run_worker
from tests.contract.fake_backend import FakeBackend

SERVICE = "fake-worker"


def main() -> None:
    with config_errors_exit(SERVICE):
        setup_logging(SERVICE, env_str("LOG_LEVEL", "INFO"))
        kind = env_str("FAKE_KIND", "chat")
        settings = WorkerProcessSettings.from_env(default_pool=f"contract-{kind}")
        backend = FakeBackend(kind, events_file=env_str("FAKE_EVENTS_FILE") or None, worker_id=settings.worker_id,
                              accounts=env_int("FAKE_ACCOUNTS", 0, minimum=0), model=env_str("FAKE_MODEL", ""))
    exit_on_start_failure(lambda: uvloop.run(run_worker(SERVICE, settings, lambda metrics: backend)))


if __name__ == "__main__":
    main()
