"""The image-worker's upstream side: one image job is one POST to `{base_url}/images/generations`
(with failover, libs/openai_upstream/unary.py), then every image in the form the client asked for
(`response_format`, `url` by default as at OpenAI):

- asked `url`, given `b64_json`: the bytes (an image by their magic bytes, else an upstream
  protocol error) go to the object store the edge serves URLs from (store.py), and the item
  becomes `{"object": {name, content_type, size}}`, which the edge turns into its own URL;
- asked `b64_json`, given `url`: the URL is fetched (size-limited by `fetch_max_bytes`, within the
  job's remaining time) and its bytes base64-encoded;
- the same form: passed through. An upstream's `url` stays the upstream's URL (the client follows
  it to the provider, as it would calling the provider itself).

`revised_prompt` is kept; `created` is the upstream's, or now. Images have no token usage in
OpenAI's API, so the job ends with none.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import Any, TypeVar

from nats.js import JetStreamContext

from libs.errors import UpstreamProtocolError
from libs.openai_upstream.clients import UpstreamClients
from libs.openai_upstream.config import Upstream
from libs.openai_upstream.failover import Failover
from libs.openai_upstream.unary import post_json
from libs.worker_backend import Item, Result, StreamEnd, WholeAnswer
from libs.worker_metrics import WorkerMetrics
from proto.messages import Feature, Job, Kind
from services.image_worker.imagetype import ImageType, image_type
from services.image_worker.store import ImageObjects

T = TypeVar("T")

PATH = "/images/generations"
DEFAULT_FETCH_MAX_BYTES = 20 * 1024 * 1024


class ImageBackend:
    def __init__(
        self, upstreams: list[Upstream], metrics: WorkerMetrics, *, fetch_max_bytes: int = DEFAULT_FETCH_MAX_BYTES,
        connect_timeout: float = 10.0,
    ) -> None:
        self.failover = Failover(upstreams, metrics)
        self._by_model = {m: [u for u in upstreams if m in u.models] for m in self.failover.models}
        self.serves: dict[str, list[Kind]] = {m: ["image"] for m in self.failover.models}
        self.features: list[Feature] = []
        self.clients = UpstreamClients(upstreams, connect_timeout=connect_timeout)
        self.fetch_max_bytes = fetch_max_bytes
        self.objects = ImageObjects()

    async def attach(self, js: JetStreamContext) -> None:
        """The worker's JetStream context (libs/worker_main.py calls this before the first job)."""
        self.objects.attach(js)

    async def stream(self, job: Job, body: dict[str, Any]) -> AsyncIterator[Item]:
        yield WholeAnswer()
        answer = await post_json(self.clients, self.failover, job, PATH, body, expect="data")
        wanted = body.get("response_format") or "url"  # OpenAI's default
        upstream = self._answered_by(job)  # post_json has raised ModelNotFound for a model not served
        items = [self._convert(item, wanted, job, upstream) for item in answer["data"]]
        created = answer.get("created")
        yield Result({
            "created": created if type(created) is int else int(time.time()),
            "data": [await items[0]] if len(items) == 1 else await gather_all(items),
        })
        yield StreamEnd(usage=None)

    def _answered_by(self, job: Job) -> Upstream:
        """The upstream to fetch a URL answer through (its proxy; the name errors blame).
        post_json does not say which upstream answered; with one upstream per model (the usual
        case) it is that one, else the model's first. Not `failover.candidates`: that rotates."""
        return self._by_model[job["model"]][0]

    async def _convert(self, item: Any, wanted: str, job: Job, upstream: Upstream) -> dict[str, Any]:
        if not isinstance(item, dict):
            raise _bad_image(upstream, "an image that is not an object")
        b64, url = item.get("b64_json"), item.get("url")
        out: dict[str, Any]
        if wanted == "b64_json" and isinstance(b64, str):
            out = {"b64_json": b64}
        elif wanted == "url" and isinstance(url, str):
            out = {"url": url}
        elif isinstance(b64, str):  # url asked: stored, served by the edge
            data = _decode(b64, upstream)
            out = {"object": await self.objects.put(data, _checked_type(data, upstream))}
        elif isinstance(url, str):  # b64_json asked: fetched
            out = {"b64_json": await fetch_b64(self.clients, url, upstream, limit=self.fetch_max_bytes,
                                               deadline=job["deadline"])}
        else:
            raise _bad_image(upstream, "an image with neither url nor b64_json")
        revised = item.get("revised_prompt")
        if isinstance(revised, str):
            out["revised_prompt"] = revised
        return out

    async def aclose(self) -> None:
        await self.clients.aclose()


async def fetch_b64(clients: UpstreamClients, url: str, upstream: Upstream, *, limit: int, deadline: float) -> str:
    """The image at `url` (an address `upstream` answered with) as base64: fetched through the
    upstream's proxy within the job's `deadline`, at most `limit` bytes, an image by its magic bytes."""
    within = max(0.0, deadline - time.time())
    data, _ = await clients.get(url, limit=limit, upstream=upstream, within=within)
    _checked_type(data, upstream)
    return base64.b64encode(data).decode("ascii")


def _decode(b64: str, upstream: Upstream) -> bytes:
    try:
        return base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _bad_image(upstream, "b64_json that is not base64") from exc


def _checked_type(data: bytes, upstream: Upstream) -> ImageType:
    kind = image_type(data)
    if kind is None:
        raise _bad_image(upstream, "an image that is not a PNG, JPEG, WEBP or GIF")
    return kind


def _bad_image(upstream: Upstream, what: str) -> UpstreamProtocolError:
    err = UpstreamProtocolError(f"upstream {upstream.name} sent {what}")
    err.upstream = upstream.name  # the metrics label of the upstream to blame
    return err


async def gather_all(conversions: Sequence[Awaitable[T]]) -> list[T]:
    """Several images converted at once (stores and fetches wait on the network); the first
    failure cancels the rest."""
    tasks = [asyncio.ensure_future(c) for c in conversions]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            task.cancel()
