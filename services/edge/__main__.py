"""The edge: OpenAI-compatible HTTP API in front of the NATS bus.

    python -m services.edge

Env: PORT (8080), HOST (127.0.0.1), NATS_URL, AUTH_TOKEN / AUTH_TOKENS (static keys), ADMIN_KEY (guards
the admin API: /admin/users (seed 002), /admin/keys; unset, those routes answer 404), API_KEY_PREFIX
("sb-": what managed keys start with; keys live in the KV bucket SY_V1_API_KEYS, services/edge/keys.py),
ALLOWED_ORIGINS, NO_LOG, MAX_BODY_BYTES,
SYDNEY_UPLOAD_MAX_BYTES (10 MiB: POST /image/upload's multipart body),
SY_ROUTES / SY_ALIASES / SY_DEFAULT_POOL or SWITCHYARD_CONFIG (routing.py), SY_TIMEOUT_* and
SY_TIME_SCALE (libs/timeouts.py); MAX_HEADER_BYTES, MAX_HEADERS, SY_TIMEOUT_REQUEST_HEAD, MIN_BODY_RATE,
MAX_CONNECTIONS (libs/http_limits.py); SY_PRIVATE_APIS (libs/fenced).

Which HTTP protocol runs:
- private APIs on (the default, on the tested uvicorn release): the edge's own subclass of
  uvicorn's httptools protocol (libs/fenced/uvicorn_internals.py), which enforces every limit
  above and sends a response's head with its body;
- SY_PRIVATE_APIS=0 (or an untested uvicorn): stock `http="h11"` with uvicorn's public limits.
  That path bounds a head's size only while it is incomplete in h11's buffer
  (h11_max_incomplete_event_size: an 8 MB header gets h11's 400, not a 431; a 120 KB head of
  10,000 fields that arrives in one read passes), and answers 503 once MAX_CONNECTIONS are open
  (limit_concurrency, checked when a request's head is complete). It has no header count limit,
  no head timeout, no body rate and no eviction: a connection that never completes a head, or
  trickles its body, holds its descriptor until the client goes (1,100 silent connections to an
  edge with 1,024 descriptors keep every real client out on this path).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

import uvicorn

from libs.fenced import private_apis_enabled
from libs.http_limits import descriptor_budget
from libs.logs import config_errors_exit, log_config, setup_logging, url_without_credentials
from libs.settings import env_str
from services.edge.app import create_app
from services.edge.server import DrainingServer
from services.edge.settings import EdgeSettings

log = logging.getLogger("switchyard.edge")


def main() -> None:
    with config_errors_exit("edge"):
        setup_logging("edge", env_str("LOG_LEVEL", "INFO"))
        settings = EdgeSettings.from_env()
        app, state = create_app(settings)
    limits = dataclasses.replace(settings.limits, max_connections=descriptor_budget(settings.limits.max_connections))
    protocol: dict[str, Any]
    if private_apis_enabled():
        from libs.fenced.uvicorn_internals import guarded_protocol

        protocol = {"http": guarded_protocol(limits)}
    else:
        protocol = {"http": "h11", "h11_max_incomplete_event_size": limits.max_header_bytes,
                    "limit_concurrency": limits.max_connections}
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, loop="uvloop", **protocol, ws="none", lifespan="on",
        access_log=False, log_level="warning", timeout_graceful_shutdown=int(settings.timeouts.drain) or 1,
        server_header=False,
        # X-Forwarded-* would only rewrite the client address, which the edge never reads: skip
        # uvicorn's middleware that parses them on every request
        proxy_headers=False,
        log_config=log_config("edge", env_str("LOG_LEVEL", "INFO")),  # uvicorn's own lines as JSON too
    )
    try:
        DrainingServer(config, state).run()
    except asyncio.CancelledError:
        log.error("start-up stopped by a signal (NATS at %s)", url_without_credentials(settings.nats_url))
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
