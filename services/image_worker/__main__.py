"""image-worker: answers image generation jobs from OpenAI-compatible upstreams, or from Bing Image Creator.

    python -m services.image_worker

Env:
- IMAGES_BACKEND: `openai` (default) or `bing`;
- NATS_URL, WORKER_POOL (default "images"; "bing-images" with IMAGES_BACKEND=bing), WORKER_CAPACITY
  (default 64), PORT (probes and /metrics), IMAGES_FETCH_MAX_BYTES (the largest image fetched from a
  URL to answer `b64_json`, default 20 MiB), HTTPS_PROXY / HTTP_PROXY, SY_TIMEOUT_* and SY_TIME_SCALE
  (libs/timeouts.py; with bing it also scales the 3 s between polls and the account pool's times);
- openai: IMAGES_BASE_URL / IMAGES_API_KEY / IMAGES_MODELS or IMAGES_WORKER_CONFIG (a TOML file with
  [[upstreams]], libs/openai_upstream/config.py);
- bing (services/image_worker/bing.py): BING_BASE_URL, SYDNEY_CREATE_URL, SYDNEY_CHATHUB_URL,
  DEFAULT_COOKIES, SYDNEY_ACCOUNTS_FILE (libs/bing/config.py: the accounts sydney-worker leases too,
  pool `bing`), BING_IMAGE_MODELS (comma-separated model names served besides `bing-image-creator`).
"""

from __future__ import annotations

from collections.abc import Callable

import uvloop

from libs.bing.config import load_bing_config
from libs.logs import config_errors_exit, setup_logging
from libs.openai_upstream.config import load_upstreams
from libs.settings import ConfigError, env_float, env_int, env_list, env_str
from libs.worker_backend import Backend
from libs.worker_main import WorkerProcessSettings, exit_on_start_failure, run_worker
from libs.worker_metrics import WorkerMetrics
from services.image_worker.backend import DEFAULT_FETCH_MAX_BYTES, ImageBackend

SERVICE = "image-worker"
BACKENDS = ("openai", "bing")


def main() -> None:
    with config_errors_exit(SERVICE):
        setup_logging(SERVICE, env_str("LOG_LEVEL", "INFO"))
        backend = env_str("IMAGES_BACKEND", "openai").strip().lower() or "openai"
        if backend not in BACKENDS:
            raise ConfigError(f"IMAGES_BACKEND must be one of {', '.join(BACKENDS)}")
        settings = WorkerProcessSettings.from_env(default_pool="bing-images" if backend == "bing" else "images")
        fetch_max_bytes = env_int("IMAGES_FETCH_MAX_BYTES", DEFAULT_FETCH_MAX_BYTES, minimum=1)
        make: Callable[[WorkerMetrics], Backend]
        if backend == "bing":
            from services.image_worker.bing import BingImageBackend  # its libraries only when chosen

            config = load_bing_config()
            models = env_list("BING_IMAGE_MODELS")
            scale = env_float("SY_TIME_SCALE", 1.0)
            make = lambda metrics: BingImageBackend(  # noqa: E731
                config, metrics, worker_id=settings.worker_id, models=models, fetch_max_bytes=fetch_max_bytes,
                time_scale=scale)
        else:
            upstreams = load_upstreams(None, "IMAGES")
            make = lambda metrics: ImageBackend(upstreams, metrics, fetch_max_bytes=fetch_max_bytes)  # noqa: E731
    exit_on_start_failure(lambda: uvloop.run(run_worker(SERVICE, settings, make)))


if __name__ == "__main__":
    main()
