"""POST /v1/embeddings: deterministic unit vectors, OpenAI's request rules and response shape.

A vector is drawn from SHAKE-256 of the text (or of the token ids), so it is the same in every process
and run; `dimensions` truncates it and renormalises, as OpenAI's text-embedding-3 models do.
"""

from __future__ import annotations

import array
import base64
import hashlib
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from . import directives
from .config import Settings
from .directives import Directives
from .parse import BadRequest, model_not_found

MAX_INPUTS = 2048  # OpenAI's limit on the items of one request
DEFAULT_DIM = 256  # a model named in SANDBOX_EMBEDDING_MODELS without a width and not in the table below
# model -> (native width, accepts `dimensions`), after OpenAI's and common open models
KNOWN: dict[str, tuple[int, bool]] = {
    "sandbox-embedding": (64, True),
    "text-embedding-3-small": (1536, True),
    "text-embedding-3-large": (3072, True),
    "text-embedding-ada-002": (1536, False),
    "intfloat/e5-large-v2": (1024, False),
}
_INVALID_INPUT = "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference."


@dataclass(frozen=True, slots=True)
class EmbeddingModel:
    dim: int
    shortens: bool  # accepts `dimensions`


def models(settings: Settings) -> dict[str, EmbeddingModel]:
    """The served embedding models with their widths (built once at start-up)."""
    out = {}
    for name, dim in settings.embedding_models:
        known_dim, shortens = KNOWN.get(name, (DEFAULT_DIM, False))
        out[name] = EmbeddingModel(dim or known_dim, shortens and dim is None)
    return out


@dataclass(slots=True)
class EmbeddingJob:
    model: str
    directive_text: str
    seeds: list[bytes]  # one per input: the bytes its vector is drawn from
    prompt_tokens: int
    dim: int
    base64: bool


def _inputs(raw: Any) -> tuple[list[bytes], int, str]:
    """Seeds, token estimate and directive text of `input`: a string, strings, token ids, or arrays of them."""
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not items or len(items) > MAX_INPUTS:
        raise BadRequest(_INVALID_INPUT, "input")
    if all(type(t) is int for t in items):  # one token array
        items = [items]
    elif not (all(isinstance(i, str) for i in items) or all(isinstance(i, list) for i in items)):
        raise BadRequest(_INVALID_INPUT, "input")  # one of the four forms, never a mix
    seeds: list[bytes] = []
    tokens = 0
    texts: list[str] = []
    for item in items:
        if isinstance(item, str) and item:
            texts.append(item)
            # the seed ignores directives and whitespace runs, so adding a directive keeps the vector
            seeds.append(b"text:" + directives.strip(item).encode())
            tokens += (len(item.encode()) + 3) // 4  # ~4 bytes a token, as for English text
        elif isinstance(item, list) and item and all(type(t) is int and t >= 0 for t in item):
            seeds.append(b"tokens:" + ",".join(map(str, item)).encode())
            tokens += len(item)
        else:  # empty strings, empty or mixed arrays: OpenAI refuses the whole request
            raise BadRequest(_INVALID_INPUT, "input")
    return seeds, tokens, "\n".join(texts)


def job_parser(settings: Settings) -> Callable[[Any], EmbeddingJob]:
    served = models(settings)

    def parse(body: Any) -> EmbeddingJob:
        if not isinstance(body, dict):
            raise BadRequest("request body must be a JSON object")
        if "input" not in body:
            raise BadRequest("'input' is a required property", "input")
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise BadRequest("you must provide a model parameter", "model")
        seeds, tokens, text = _inputs(body["input"])
        encoding = body.get("encoding_format") or "float"  # null is the default, as for OpenAI
        if encoding not in ("float", "base64"):
            raise BadRequest(
                f"Invalid value: '{encoding}'. Supported values are: 'float' and 'base64'.", "encoding_format"
            )
        spec = served.get(model)
        if spec is None:
            raise model_not_found(model)
        dim = spec.dim
        wanted = body.get("dimensions")
        if wanted is not None:
            if not spec.shortens:
                raise BadRequest("This model does not support specifying dimensions.", "dimensions")
            if type(wanted) is not int or not 1 <= wanted <= spec.dim:
                raise BadRequest(f"Invalid value for 'dimensions': must be between 1 and {spec.dim}.", "dimensions")
            dim = wanted
        return EmbeddingJob(model, text, seeds, tokens, dim, encoding == "base64")

    return parse


def vector(seed: bytes, dim: int) -> array.array[float]:
    """A unit vector of float32 (components drawn as signed bytes, then normalised)."""
    drawn = array.array("b", hashlib.shake_256(seed).digest(dim))
    scale = 1.0 / (math.hypot(*drawn) or 1.0)
    return array.array("f", [x * scale for x in drawn])


def answer(job: EmbeddingJob, d: Directives) -> bytes:
    data: list[dict[str, Any]] = []
    for i, seed in enumerate(job.seeds):
        vec = vector(seed, job.dim)
        if job.base64:
            if sys.byteorder != "little":
                vec.byteswap()  # the wire format is little-endian float32
            embedding: Any = base64.b64encode(vec.tobytes()).decode()
        else:
            embedding = vec.tolist()  # the float32 values as JSON doubles, as OpenAI writes them
        data.append({"object": "embedding", "index": i, "embedding": embedding})
    usage = {"prompt_tokens": job.prompt_tokens, "total_tokens": job.prompt_tokens}
    return orjson.dumps({"object": "list", "data": data, "model": job.model, "usage": usage})
