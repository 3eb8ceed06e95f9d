"""agent-bridge: ChatGPT-API-server's browser agents (seed 002) as the `agents` pool of the bus.

    python -m services.agent_bridge

Agents connect to ws://<host>:<PORT>/client/register (the same port as /healthz, /readyz and
/metrics). Env: NATS_URL, WORKER_POOL (default "agents"), WORKER_CAPACITY (default 256: asks this
replica runs at once, its own agents' and forwarded ones; its idle agents bound what it pulls),
PORT, WORKER_HOST, AGENT_MODELS (default "chatgpt-agent": the models /v1/chat/completions reaches
the agents by), SY_TIMEOUT_* and SY_TIME_SCALE (the ping's 5 s and the answer's 120 s scale too).
"""

from __future__ import annotations

import uvloop

from libs.logs import config_errors_exit, setup_logging
from libs.settings import env_str
from libs.worker_main import WorkerProcessSettings, exit_on_start_failure, run_worker
from services.agent_bridge.backend import AgentBackend
from services.agent_bridge.config import BridgeConfig

SERVICE = "agent-bridge"


def main() -> None:
    with config_errors_exit(SERVICE):
        setup_logging(SERVICE, env_str("LOG_LEVEL", "INFO"))
        config = BridgeConfig.from_env()
        settings = WorkerProcessSettings.from_env(default_pool="agents", default_capacity=256)
    exit_on_start_failure(lambda: uvloop.run(run_worker(
        SERVICE, settings, lambda metrics: AgentBackend(config, metrics, pool=settings.pool,
                                                        worker_id=settings.worker_id))))


if __name__ == "__main__":
    main()
