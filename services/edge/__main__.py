"""The edge: OpenAI-compatible HTTP API in front of the NATS bus.

    python -m services.edge

Env: PORT (8080), HOST (127.0.0.1), NATS_URL, AUTH_TOKEN, ALLOWED_ORIGINS, NO_LOG, MAX_BODY_BYTES,
SY_ROUTES / SY_ALIASES / SY_DEFAULT_POOL or SWITCHYARD_CONFIG (routing.py), SY_TIMEOUT_* and
SY_TIME_SCALE (libs/timeouts.py).
"""

from __future__ import annotations

import asyncio
import logging

import uvicorn

from libs.logs import config_errors_exit, setup_logging, url_without_credentials, uvicorn_log_config
from libs.settings import env_str
from services.edge.app import create_app
from services.edge.http_protocol import EdgeHttpProtocol
from services.edge.server import DrainingServer
from services.edge.settings import EdgeSettings

log = logging.getLogger("switchyard.edge")


def main() -> None:
    with config_errors_exit("edge"):
        setup_logging("edge", env_str("LOG_LEVEL", "INFO"))
        settings = EdgeSettings.from_env()
        app, state = create_app(settings)
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, loop="uvloop", http=EdgeHttpProtocol, lifespan="on",
        access_log=False, log_level="warning", timeout_graceful_shutdown=int(settings.timeouts.drain) or 1,
        server_header=False,
        # X-Forwarded-* would only rewrite the client address, which the edge never reads: skip
        # uvicorn's middleware that parses them on every request
        proxy_headers=False,
        log_config=uvicorn_log_config("edge", env_str("LOG_LEVEL", "INFO")),  # uvicorn's own lines as JSON too
    )
    try:
        DrainingServer(config, state).run()
    except asyncio.CancelledError:
        log.error("start-up stopped by a signal (NATS at %s)", url_without_credentials(settings.nats_url))
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
