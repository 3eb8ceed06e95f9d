"""Bus-only baselines for `make bench`, answering with a ~300-byte JSON:

- core NATS request/reply on `bench.echo`: what plain NATS costs on this machine;
- the gateway's dispatch design without HTTP or an upstream: jobs published to a JetStream
  work-queue stream (`BENCH_JOBS`), pulled by `libs.pull.JobPuller` (the workers' own puller),
  answered on the reply subject the job names, then acked.
"""

from __future__ import annotations

import asyncio
import os
import signal

import nats
import orjson
from nats.aio.msg import Msg
from nats.js import api as js_api

from libs.pull import JobPuller

SUBJECT = "bench.echo"
JOB_STREAM = "BENCH_JOBS"
JOB_SUBJECT = "bench.jobs"
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
    js = nc.jetstream()
    await js.add_stream(js_api.StreamConfig(
        name=JOB_STREAM, subjects=[JOB_SUBJECT], retention=js_api.RetentionPolicy.WORK_QUEUE,
        storage=js_api.StorageType.MEMORY, max_age=60,
    ))
    await js.add_consumer(JOB_STREAM, js_api.ConsumerConfig(
        durable_name="bench", ack_policy=js_api.AckPolicy.EXPLICIT, ack_wait=5, max_ack_pending=-1,
    ))
    acks: set[asyncio.Task[None]] = set()

    async def answer(job: Msg) -> None:
        await nc.publish(orjson.loads(job.data)["reply"], REPLY)
        await job.ack()
        puller.release()

    def on_job(job: Msg) -> None:
        task = asyncio.create_task(answer(job))
        acks.add(task)
        task.add_done_callback(acks.discard)

    puller = JobPuller(nc, JOB_STREAM, "bench", 128, on_job, expires=2.5)
    await puller.start()
    await nc.flush()
    await serve_until_signalled()
    await nc.drain()


async def serve_until_signalled() -> None:
    """Say "ready" (the bench waits for it), then return on SIGTERM or SIGINT."""
    print("ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
