"""A tiny core-NATS responder for `make bench`: replies to `bench.echo` with a ~300-byte JSON.

The baseline for what plain NATS request/reply costs on this machine, without JetStream or HTTP.
"""

from __future__ import annotations

import asyncio
import os
import signal

import nats
import orjson
from nats.aio.msg import Msg

SUBJECT = "bench.echo"
REPLY = orjson.dumps(
    {
        "id": "chatcmpl-bench-0000000000000000",
        "object": "chat.completion",
        "model": "sandbox-chat",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "x" * 120}}],
        "usage": {"prompt_tokens": 8, "completion_tokens": 8, "total_tokens": 16},
    }
)


async def main() -> None:
    nc = await nats.connect(os.environ["NATS_URL"])

    async def handle(msg: Msg) -> None:
        await nc.publish(msg.reply, REPLY)

    await nc.subscribe(SUBJECT, cb=handle)
    await nc.flush()
    print("ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await nc.drain()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
