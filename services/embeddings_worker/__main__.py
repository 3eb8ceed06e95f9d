"""embeddings-worker: embedding jobs on the built-in model (all-MiniLM-L6-v2, run in this process,
offline) and on OpenAI-compatible upstreams for other models.

    python -m services.embeddings_worker

Env: the worker's own (NATS_URL, WORKER_POOL (default "embeddings"), WORKER_CAPACITY, PORT, ...);
EMBEDDINGS_BUILTIN (default 1: serve the built-in model; 0: upstreams only), EMBEDDINGS_THREADS
(the model's threads, default 1), EMBEDDINGS_BATCH_MAX (inputs per model call, 64),
EMBEDDINGS_BATCH_WAIT_MS (how long a call waits for more inputs, 0), EMBEDDINGS_BATCHING (default
1; 0 runs each request alone, for comparison); upstreams: EMBEDDINGS_BASE_URL / EMBEDDINGS_API_KEY /
EMBEDDINGS_MODELS or EMBEDDINGS_WORKER_CONFIG (libs/openai_upstream/config.py).
"""

from __future__ import annotations

import logging

import uvloop

from libs.logs import config_errors_exit, setup_logging
from libs.openai_upstream.config import load_upstreams
from libs.settings import ConfigError, env_bool, env_float, env_int, env_str
from libs.worker_main import WorkerProcessSettings, exit_on_start_failure, run_worker
from libs.worker_metrics import WorkerMetrics
from services.embeddings_worker.backend import EmbeddingsBackend
from services.embeddings_worker.batcher import DEFAULT_MAX_BATCH, DEFAULT_MAX_WAIT, MicroBatcher
from services.embeddings_worker.local_model import DEFAULT_THREADS, LocalModel

SERVICE = "embeddings-worker"
log = logging.getLogger("switchyard.worker")


def main() -> None:
    with config_errors_exit(SERVICE):
        setup_logging(SERVICE, env_str("LOG_LEVEL", "INFO"))
        settings = WorkerProcessSettings.from_env(default_pool="embeddings")
        upstreams = load_upstreams(None, "EMBEDDINGS", required=False)
        builtin = env_bool("EMBEDDINGS_BUILTIN", True)
        if not builtin and not upstreams:
            raise ConfigError(
                "EMBEDDINGS_BUILTIN=0 needs an upstream (EMBEDDINGS_BASE_URL or EMBEDDINGS_WORKER_CONFIG)")
        threads = env_int("EMBEDDINGS_THREADS", DEFAULT_THREADS, minimum=1)
        batch_max = env_int("EMBEDDINGS_BATCH_MAX", DEFAULT_MAX_BATCH, minimum=1)
        wait = env_float("EMBEDDINGS_BATCH_WAIT_MS", DEFAULT_MAX_WAIT * 1000, zero=True) / 1000
        batching = env_bool("EMBEDDINGS_BATCHING", True)
    # loaded before the worker connects: a model that cannot load stops the start, with its reason
    model = LocalModel.load(threads) if builtin else None

    def backend(metrics: WorkerMetrics) -> EmbeddingsBackend:
        local = None
        if model is not None:
            local = (model, MicroBatcher(model, batching=batching, max_wait=wait, max_batch=batch_max))
        return EmbeddingsBackend(local, upstreams, metrics)

    exit_on_start_failure(lambda: uvloop.run(run_worker(SERVICE, settings, backend)))


if __name__ == "__main__":
    main()
