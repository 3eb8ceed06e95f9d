"""The NATS side shared by every service: connecting, and creating the JetStream objects of proto/.

Each JetStream object is created by its owner only (proto/subjects.toml), idempotently: creating
an existing object with the same config is a no-op, and a changed config is applied as an update.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import BadRequestError, NotFoundError

import proto
from libs import fenced, secrets
from libs.errors import BusError
from libs.fenced import nats_internals
from libs.logs import url_without_credentials

log = logging.getLogger("switchyard.bus")


async def connect(
    url: str, name: str, *, on_reconnect: Callable[[], Awaitable[None]] | None = None, initial_wait: float = 10.0,
) -> NATS:
    """A connection that outlives NATS restarts. `on_reconnect` restores what a restarted server
    lost (memory streams and consumers); it runs in the background, so a slow restore (a worker
    waiting for the edge to recreate the stream) never holds up nats-py's own reconnect work.

    The first connection is given `initial_wait` seconds: nats-py, told to reconnect forever,
    would otherwise retry an unreachable first server forever too, and a service started against
    a wrong NATS_URL would neither start nor say why. It fails with a BusError naming the URL
    (without any user:password it carries)."""
    restoring: set[asyncio.Task[None]] = set()
    secrets.hold_url(url)  # nats://user:password@host: credentials this process holds
    shown = url_without_credentials(url)
    first_error: list[BaseException] = []  # the latest failure of the first connection, for the message

    async def restore() -> None:
        assert on_reconnect is not None
        try:
            await on_reconnect()
        except Exception:
            log.exception("restoring JetStream objects after a reconnect failed")

    async def error_cb(exc: Exception) -> None:
        if connecting:  # one line at the end says why, rather than one per attempt
            first_error[:] = [exc]
            return
        log.warning("nats error: %s", type(exc).__name__)

    async def disconnected_cb() -> None:
        if connecting:  # a first connection that failed: the BusError says so
            return
        if nc.is_closed:  # our own drain or close: nothing went wrong
            log.info("nats connection closed")
        else:
            log.warning("nats disconnected")

    async def reconnected_cb() -> None:
        log.info("nats reconnected")
        if on_reconnect is not None:
            task = asyncio.create_task(restore())
            restoring.add(task)
            task.add_done_callback(restoring.discard)

    nc = NATS()
    connecting = True
    try:
        await asyncio.wait_for(nc.connect(
            servers=[url],
            name=name,
            error_cb=error_cb,
            disconnected_cb=disconnected_cb,
            reconnected_cb=reconnected_cb,
            max_reconnect_attempts=-1,  # a service outlives NATS restarts
            reconnect_time_wait=0.5,  # type: ignore[arg-type]  # annotated int; it is a sleep in seconds
            connect_timeout=min(5.0, initial_wait),  # type: ignore[arg-type]  # a float works too
            allow_reconnect=True,
        ), initial_wait)
    except BaseException as exc:  # a timeout, or a cancellation (SIGTERM while connecting)
        with contextlib.suppress(Exception):  # bounded: a connection cut mid-handshake may never close
            await asyncio.wait_for(nc.close(), 1.0)
        if not isinstance(exc, Exception):
            raise
        cause = first_error[0] if first_error else exc
        detail = f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__
        raise BusError(f"cannot connect to NATS at {shown} within {initial_wait:g}s ({detail})") from None
    finally:
        connecting = False
    log.info("nats-py private fast paths %s", "on" if fenced.private_apis_enabled() else "off")
    return nc


DEFAULT_MAX_QUEUED_PER_POOL = 1000


async def ensure_job_stream(
    js: JetStreamContext, max_age: float, duplicate_window: float = 120.0,
    max_per_pool: int = DEFAULT_MAX_QUEUED_PER_POOL,
) -> None:
    """The work-queue stream of jobs (owner: edge); jobs with a Nats-Msg-Id are de-duplicated
    within `duplicate_window` (an edge publishes a job again to confirm it was stored). A pool's
    queue is bounded: past `max_per_pool` jobs waiting or starting on its subject, JetStream
    refuses the new one (which the edge answers at once) rather than drop an older one."""
    spec = proto.contract()["streams"]["jobs"]
    config = js_api.StreamConfig(
        name=spec["name"],
        subjects=list(spec["subjects"]),
        retention=js_api.RetentionPolicy.WORK_QUEUE,
        storage=js_api.StorageType.MEMORY,
        max_age=max_age,
        max_msgs_per_subject=max_per_pool,
        discard=js_api.DiscardPolicy.NEW,
        discard_new_per_subject=True,
        duplicate_window=duplicate_window,
        num_replicas=1,
    )
    await add_or_update_stream(js, config)


async def add_or_update_stream(js: JetStreamContext, config: js_api.StreamConfig) -> None:
    try:
        await js.add_stream(config)
    except BadRequestError:
        # exists with another config (e.g. a new max_age): apply ours
        await js.update_stream(config)


async def ensure_body_store(js: JetStreamContext, ttl: float) -> None:
    """The object store for request bodies too large to travel inline (owner: edge)."""
    await _ensure_object_store(js, proto.BODY_STORE, "large request bodies", ttl=ttl)


async def ensure_image_store(js: JetStreamContext, ttl: float, max_bytes: int) -> None:
    """The object store of generated images served as URLs (owner: edge; image workers write).

    In memory like every Switchyard object: an image lives as long as its URL (`ttl`), and the
    store is bounded (`max_bytes`): when full, a worker's write fails, and the client gets an error
    rather than an edge that swells."""
    await _ensure_object_store(js, proto.IMAGE_STORE, "generated images served as URLs", ttl=ttl,
                               max_bytes=max_bytes)


async def _ensure_object_store(
    js: JetStreamContext, bucket: str, description: str, *, ttl: float, max_bytes: int | None = None,
) -> None:
    """An in-memory object store, made once: one that exists with another config is used as it is."""
    config = js_api.ObjectStoreConfig(
        bucket=bucket, storage=js_api.StorageType.MEMORY, ttl=ttl, max_bytes=max_bytes, description=description,
    )
    try:
        await js.create_object_store(bucket, config=config)
    except BadRequestError:
        log.info("object store %s exists with another config; using it as is", bucket)


async def ensure_pool_consumer(
    js: JetStreamContext, pool: str, *, ack_wait: float, max_deliver: int, wait_for_stream: float
) -> str:
    """The pool's durable pull consumer (owner: the pool's workers; every replica binds to it).

    The stream belongs to the edge, so a worker that starts first waits for it to appear.
    """
    durable = proto.consumer_name(pool)
    config = js_api.ConsumerConfig(
        durable_name=durable,
        filter_subject=proto.job_subject(pool),
        ack_policy=js_api.AckPolicy.EXPLICIT,
        deliver_policy=js_api.DeliverPolicy.ALL,
        ack_wait=ack_wait,
        max_deliver=max_deliver,
        max_waiting=4096,  # outstanding pull requests across all replicas
        max_ack_pending=-1,  # each worker bounds its own in-flight jobs
    )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_for_stream
    while True:
        try:
            await js.add_consumer(proto.STREAM_JOBS, config)
            return durable
        except NotFoundError:
            if loop.time() > deadline:
                raise BusError(f"stream {proto.STREAM_JOBS} does not exist (is the edge running?)") from None
            await asyncio.sleep(0.25)
        except BadRequestError as exc:
            # the server updates editable fields itself; anything else needs an operator
            log.warning("consumer %s exists with an incompatible config: %s", durable, exc.description)
            return durable


def delivery_count(ack_subject: str) -> int:
    """How many times JetStream has delivered a message, read from its ack subject.

    `$JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>`, or the
    newer form with a domain and an account hash after `$JS.ACK` (12 tokens or more). nats-py's
    `Msg.metadata` parses the same and builds a datetime besides, ten times slower, once per job.
    """
    tokens = ack_subject.split(".")
    return int(tokens[4] if len(tokens) == 9 else tokens[6])


async def subscribe_inline(nc: NATS, subject: str, handler: Callable[[Msg], None]) -> Subscription:
    """Subscribe with a synchronous `handler` called as each message is read.

    nats-py hands every message to a per-subscription task through a queue: one more event-loop
    turn (and task step) per message, on the hot path of every reply and every job. The handler
    runs inside nats-py's read loop instead (libs/fenced/nats_internals.py), so it must be quick
    and must not block; it may start tasks. Without the private fast path it is an ordinary
    subscription whose task calls the handler. Either way a failing handler is logged, and the
    subscription goes on delivering.
    """
    if fenced.private_apis_enabled():
        sub = await nc.subscribe(subject)  # no callback: nats-py starts no task, only an unused iterator
        nats_internals.inline_delivery(sub, handler)
        return sub

    async def deliver(msg: Msg) -> None:
        try:
            handler(msg)
        except Exception:  # as inline: logged, not nats-py's error callback
            log.exception("handling a message of %s failed", subject)

    return await nc.subscribe(subject, cb=deliver)
