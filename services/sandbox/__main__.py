"""`python -m services.sandbox`: the fake OpenAI upstream on uvicorn (httptools + uvloop)."""

from __future__ import annotations

import logging
import os
import socket
import sys

import uvicorn

from .app import Sandbox
from .config import Settings
from .watch import QuietAbort


def main() -> None:
    try:
        settings = Settings.from_env(os.environ)
    except ValueError as exc:  # one line naming the variable, exit status 2 (a usage error)
        print(f"sandbox: configuration error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    config = uvicorn.Config(
        Sandbox(settings),
        http="httptools",
        loop="uvloop",
        lifespan="off",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=1,  # a `hang` request must not hold up SIGTERM
        ssl_certfile=settings.tls_cert,
        ssl_keyfile=settings.tls_key,
    )
    logging.getLogger("uvicorn.error").addFilter(QuietAbort())  # after Config: it configures logging

    # Bind and listen before announcing, so the printed URL is connectable (and PORT=0 works).
    sock = socket.socket(socket.AF_INET6 if ":" in settings.host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.host, settings.port))
    sock.listen(2048)
    host, port = sock.getsockname()[:2]
    scheme = "https" if settings.tls_cert else "http"
    print(f"sandbox listening on {scheme}://{host}:{port}", flush=True)
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
