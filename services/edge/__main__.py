"""The edge: OpenAI-compatible HTTP API in front of the NATS bus.

    python -m services.edge

Env: PORT (8080), HOST (127.0.0.1), NATS_URL, AUTH_TOKEN, ALLOWED_ORIGINS, NO_LOG, MAX_BODY_BYTES,
SY_ROUTES / SY_ALIASES / SY_DEFAULT_POOL or SWITCHYARD_CONFIG (routing.py), SY_TIMEOUT_* and
SY_TIME_SCALE (libs/timeouts.py).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import types

import uvicorn

from libs.logs import config_errors_exit, setup_logging, url_without_credentials, uvicorn_log_config
from libs.settings import env_str
from services.edge.app import create_app
from services.edge.http_protocol import EdgeHttpProtocol
from services.edge.settings import EdgeSettings
from services.edge.state import EdgeState

log = logging.getLogger("switchyard.edge")


class DrainingServer(uvicorn.Server):
    """On SIGTERM: /readyz turns 503 at once while the edge keeps serving for `readiness_grace`
    (load balancers and Kubernetes endpoints stop routing to it meanwhile); then uvicorn stops
    accepting and finishes open streams within the drain time. A second signal exits at once."""

    def __init__(self, config: uvicorn.Config, state: EdgeState) -> None:
        super().__init__(config)
        self.edge_state = state
        self.serving: asyncio.Task[None] | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self.serving = asyncio.current_task()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: types.FrameType | None) -> None:
        if not self.started and self.serving is not None:
            # still starting (connecting to NATS, perhaps for a while): nothing to drain, stop now
            asyncio.get_event_loop().call_soon_threadsafe(self.serving.cancel)
            return
        if self.edge_state.draining:
            super().handle_exit(sig, frame)
            return
        self.edge_state.draining = True
        grace = self.edge_state.settings.timeouts.readiness_grace
        asyncio.get_event_loop().call_later(grace, super().handle_exit, sig, frame)


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
