"""embeddings-worker's backend: embedding jobs on the built-in model, or on OpenAI-compatible upstreams.

The model a job names picks the way: the built-in one (all-MiniLM-L6-v2, run in this process by
local_model.py through the micro-batcher) or an upstream that serves it (EMBEDDINGS_BASE_URL or
EMBEDDINGS_WORKER_CONFIG, through the shared client with its failover, libs/openai_upstream).

OpenAI's semantics, for the built-in model: `input` is a string, an array of strings, an array of
token ids or an array of token-id arrays (ids of the model's own tokenizer); `encoding_format`
`float` or `base64` (little-endian float32); `dimensions` only at the model's own size (it has no
shorter form); `usage.prompt_tokens` counts the model's own tokens. An input longer than the
model's context is a 400 naming its index, never silently cut.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Sequence
from typing import Any

import numpy as np
import orjson

from libs.errors import ContextLengthExceeded, InvalidRequest
from libs.openai_upstream.clients import UpstreamClients
from libs.openai_upstream.config import Upstream
from libs.openai_upstream.failover import Failover
from libs.openai_upstream.unary import post_json
from libs.tokens import usage
from libs.worker_backend import Item, Result, StreamEnd, WholeAnswer
from libs.worker_metrics import WorkerMetrics
from proto.messages import Feature, Job, Kind
from services.embeddings_worker.batcher import MicroBatcher
from services.embeddings_worker.local_model import LocalModel

# Tokenizing this many texts or more runs off the event loop (a few short texts take microseconds)
_TOKENIZE_INLINE = 16


def _inputs(value: Any) -> tuple[list[str] | None, list[list[int]] | None]:
    """OpenAI's four `input` forms as (texts, None) or (None, token arrays). The edge validated the form."""
    if isinstance(value, str):
        return [value], None
    if value and isinstance(value[0], int):
        return None, [list(value)]
    if value and isinstance(value[0], list):
        return None, [list(ids) for ids in value]
    return list(value), None


def _encoded(vectors: np.ndarray, encoding_format: str) -> list[Any]:
    if encoding_format == "base64":
        little = vectors.astype("<f4", copy=False)
        return [base64.b64encode(row.tobytes()).decode() for row in little]
    # Each float32 as its shortest decimal (0.019155025, not 0.019155025184154510 as a float64 would
    # print): the same values, in half the bytes on the bus and to the client. orjson writes float32
    # that way; read back, those floats print the same short text again.
    rows: list[Any] = orjson.loads(orjson.dumps(vectors, option=orjson.OPT_SERIALIZE_NUMPY))
    return rows


class EmbeddingsBackend:

    def __init__(
        self, local: tuple[LocalModel, MicroBatcher] | None, upstreams: Sequence[Upstream], metrics: WorkerMetrics,
    ) -> None:
        self.local = local
        self.features: list[Feature] = []  # none of the chat features apply
        self.clients = UpstreamClients(upstreams)  # holds (and so scrubs) every upstream credential
        self.failover = Failover(upstreams, metrics)
        served = set(self.failover.models)
        if local is not None:
            served.add(local[0].name)  # the built-in model wins over an upstream of the same name
        self.serves: dict[str, list[Kind]] = {name: ["embedding"] for name in sorted(served)}

    async def stream(self, job: Job, body: dict[str, Any]) -> AsyncIterator[Item]:
        yield WholeAnswer()  # one answer: the total limit bounds it, heartbeats go on meanwhile
        if self.local is not None and job["model"] == self.local[0].name:
            result, counted = await self._embed_locally(*self.local, body)
        else:
            result = await post_json(self.clients, self.failover, job, "/embeddings", body, expect="data")
            counted = usage(result.get("usage") if isinstance(result.get("usage"), dict) else None, body)
        yield Result(result)
        yield StreamEnd(usage=counted)

    async def _embed_locally(
        self, model: LocalModel, batcher: MicroBatcher, body: dict[str, Any],
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        dimensions = body.get("dimensions")
        if dimensions is not None and dimensions != model.dimensions:
            raise InvalidRequest(
                f"The model '{body['model']}' has {model.dimensions} dimensions and no shorter form; "
                f"'dimensions' may only be {model.dimensions}.", param="dimensions", code="invalid_value",
            )
        texts, arrays = _inputs(body["input"])
        ids = await _token_ids(model, texts, arrays)
        index = model.first_too_long(ids)
        if index is not None:
            single = isinstance(body["input"], str) or (arrays is not None and isinstance(body["input"][0], int))
            raise ContextLengthExceeded(
                f"Input {index} is {len(ids[index])} tokens long; the model '{body['model']}' takes at most "
                f"{model.context_tokens}.", param="input" if single else f"input[{index}]",
            )
        vectors = await batcher.embed(ids)
        tokens = sum(len(item) for item in ids)
        data = [{"object": "embedding", "index": i, "embedding": e}
                for i, e in enumerate(_encoded(vectors, body.get("encoding_format") or "float"))]
        result = {"object": "list", "data": data, "model": body["model"],
                  "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
        return result, {"prompt_tokens": tokens, "completion_tokens": 0, "total_tokens": tokens, "estimated": False}

    async def aclose(self) -> None:
        await self.clients.aclose()
        if self.local is not None:
            await self.local[1].close()


async def _token_ids(model: LocalModel, texts: list[str] | None, arrays: list[list[int]] | None) -> list[list[int]]:
    if texts is None:
        assert arrays is not None
        try:
            return model.check_ids(arrays)
        except ValueError as exc:
            raise InvalidRequest(str(exc), param="input", code="invalid_value") from None
    if len(texts) < _TOKENIZE_INLINE:
        return model.tokenize(texts)
    return await asyncio.to_thread(model.tokenize, texts)

