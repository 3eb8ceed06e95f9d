"""The thinnest possible gateway, as a floor for `make bench`: same processes and hops, no logic.

    python -m tools.bench_skeleton front   # HTTP in (raw ASGI on uvicorn) -> core NATS request
    python -m tools.bench_skeleton back    # NATS -> the same HTTP call to the upstream -> reply

No validation, no routing, no JetStream, no ack, no retries, no SSE, no metrics: the front
forwards the request body over core NATS request/reply, the back POSTs it to the upstream with
libs/http1.py and returns the upstream's body as it is. What this chain costs per request is what
any edge + worker design on nats-py and uvicorn pays before doing anything useful. It uses the
gateway's transport-level savings too (the edge's HTTP protocol, which sends a response's head
with its body, and libs/bus_write.py for the reply), so it stays a floor.
Env: NATS_URL, PORT (front), UPSTREAM_URL (back, e.g. http://127.0.0.1:8090/v1/chat/completions).
"""

from __future__ import annotations

import os
import sys
from typing import Any
from urllib.parse import urlsplit

import nats
import uvicorn
from nats.aio.msg import Msg

from libs.bus_write import DirectPublisher
from libs.fenced.uvicorn_internals import EdgeHttpProtocol
from libs.http1 import HTTP1Pool
from tools.bench_responder import serve_until_signalled

SUBJECT = "bench.skeleton"
_JSON = [(b"content-type", b"application/json")]


async def front() -> None:
    nc = await nats.connect(os.environ["NATS_URL"])

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        reply = await nc.request(SUBJECT, body, timeout=10)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [*_JSON, (b"content-length", str(len(reply.data)).encode())]})
        await send({"type": "http.response.body", "body": reply.data})

    config = uvicorn.Config(app, host="127.0.0.1", port=int(os.environ["PORT"]), loop="uvloop", http=EdgeHttpProtocol,
                            lifespan="off", access_log=False, log_level="warning")
    await uvicorn.Server(config).serve()
    await nc.drain()


async def back() -> None:
    nc = await nats.connect(os.environ["NATS_URL"])
    url = urlsplit(os.environ["UPSTREAM_URL"])
    pool = HTTP1Pool()
    headers = {"content-type": "application/json"}
    publisher = DirectPublisher(nc)

    async def handle(msg: Msg) -> None:
        async with pool.post(url.hostname or "", url.port or 80, url.path, headers, msg.data) as response:
            body = await response.read_all(64 * 1024 * 1024)
        await publisher.publish(msg.reply, body)

    await nc.subscribe(SUBJECT, queue="skeleton", cb=handle)
    await nc.flush()
    await serve_until_signalled()
    await pool.aclose()
    await nc.drain()


if __name__ == "__main__":
    import uvloop

    uvloop.run(front() if sys.argv[1:] == ["front"] else back())
