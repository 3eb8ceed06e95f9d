"""image-worker: answers image generation jobs from OpenAI-compatible upstreams.

    python -m services.image_worker

Env: NATS_URL, WORKER_POOL (default "images"), WORKER_CAPACITY, PORT (probes and /metrics),
IMAGES_BASE_URL / IMAGES_API_KEY / IMAGES_MODELS or IMAGES_WORKER_CONFIG (a TOML file with
[[upstreams]], libs/openai_upstream/config.py), IMAGES_FETCH_MAX_BYTES (the largest image fetched
from an upstream's URL to answer `b64_json`, default 20 MiB), HTTPS_PROXY / HTTP_PROXY,
SY_TIMEOUT_* and SY_TIME_SCALE (libs/timeouts.py).
"""

from __future__ import annotations

import uvloop

from libs.logs import config_errors_exit, setup_logging
from libs.openai_upstream.config import load_upstreams
from libs.settings import env_int, env_str
from libs.worker_main import WorkerProcessSettings, exit_on_start_failure, run_worker
from services.image_worker.backend import DEFAULT_FETCH_MAX_BYTES, ImageBackend

SERVICE = "image-worker"


def main() -> None:
    with config_errors_exit(SERVICE):
        setup_logging(SERVICE, env_str("LOG_LEVEL", "INFO"))
        settings = WorkerProcessSettings.from_env(default_pool="images")
        upstreams = load_upstreams(None, "IMAGES")
        fetch_max_bytes = env_int("IMAGES_FETCH_MAX_BYTES", DEFAULT_FETCH_MAX_BYTES, minimum=1)
    exit_on_start_failure(lambda: uvloop.run(run_worker(
        SERVICE, settings, lambda metrics: ImageBackend(upstreams, metrics, fetch_max_bytes=fetch_max_bytes))))


if __name__ == "__main__":
    main()
