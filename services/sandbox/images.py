"""POST /v1/images/generations (real PNGs, `url` or `b64_json`) and GET /_sandbox/images/<id>.png."""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from . import directives, png
from .asgi import Scope, header
from .config import Settings
from .directives import Directives
from .parse import BadRequest, model_not_found
from .state import State

MAX_N = 10  # OpenAI's bound on `n`
MAX_SIDE = 2048  # larger sides are refused: a sandbox answer must stay cheap
DEFAULT_SIZE = (1024, 1024)
URL_PREFIX = "/_sandbox/images/"
# `WxH` as OpenAI writes it, or `W*H` as some open model servers (e.g. SDXL deployments) do
_SIZE = re.compile(r"(\d{1,5})[x*](\d{1,5})")


def revises_prompt(model: str) -> bool:
    """DALL-E 3 rewrites the prompt and says how; other models return no `revised_prompt` at all."""
    return "dall-e-3" in model


@dataclass(slots=True)
class ImageJob:
    model: str
    directive_text: str  # the prompt as sent
    n: int
    width: int
    height: int
    response_format: str


def _size(raw: Any) -> tuple[int, int]:
    if raw is None or raw == "auto":
        return DEFAULT_SIZE
    match = _SIZE.fullmatch(raw) if isinstance(raw, str) else None
    if match is not None:
        width, height = int(match[1]), int(match[2])
        if 1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE:
            return width, height
    raise BadRequest(
        f"Invalid value: {raw!r}. Supported sizes are WIDTHxHEIGHT (or WIDTH*HEIGHT), each side 1..{MAX_SIDE}.",
        "size",
    )


def job_parser(settings: Settings) -> Callable[[Any], ImageJob]:
    served = frozenset(settings.image_models)
    default_model = settings.image_models[0]

    def parse(body: Any) -> ImageJob:
        if not isinstance(body, dict):
            raise BadRequest("request body must be a JSON object")
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            raise BadRequest("'prompt' is a required property and must be a non-empty string", "prompt")
        model = body.get("model") or default_model  # OpenAI too picks a default model when none is given
        if not isinstance(model, str):
            raise BadRequest("'model' must be a string", "model")
        n = body.get("n")
        if n is None:
            n = 1
        elif type(n) is not int or not 1 <= n <= MAX_N:
            raise BadRequest(f"Invalid 'n': must be an integer between 1 and {MAX_N}.", "n")
        width, height = _size(body.get("size"))
        response_format = body.get("response_format") or "url"
        if response_format not in ("url", "b64_json"):
            raise BadRequest(
                f"Invalid value: {response_format!r}. Supported values are: 'url' and 'b64_json'.", "response_format"
            )
        user = body.get("user")
        if user is not None and not isinstance(user, str):
            raise BadRequest("'user' must be a string", "user")
        if model not in served:
            raise model_not_found(model)
        return ImageJob(model, prompt, n, width, height, response_format)

    return parse


def _origin(scope: Scope) -> str:
    """Where the client reached us, so the URL we hand out points back at this sandbox."""
    host = header(scope, b"host")
    if host is None:
        server_host, port = scope.get("server") or ("127.0.0.1", 80)
        return f"{scope.get('scheme', 'http')}://{server_host}:{port}"
    return f"{scope.get('scheme', 'http')}://{host.decode('latin-1')}"


def picture(text: str, index: int, width: int, height: int, pattern: str) -> bytes:
    """The PNG for image `index` of a prompt: the same prompt, index, size and pattern give the same bytes."""
    seed = int.from_bytes(hashlib.blake2b(b"%d\n" % index + text.encode(), digest_size=8).digest(), "big")
    return (png.noise if pattern == "noise" else png.tiles)(width, height, seed)


def answer(state: State, scope: Scope, job: ImageJob, d: Directives) -> bytes:
    form = str(d.get("image_form") or job.response_format)  # the directive wins: a one-form upstream
    pattern = str(d.get("image_pattern", "tiles"))
    text = directives.strip(job.directive_text)
    revised = f"A detailed, high-quality image of: {text}" if revises_prompt(job.model) else None
    origin = _origin(scope) if form == "url" else ""
    data: list[dict[str, str]] = []
    for i in range(job.n):
        image = picture(text, i, job.width, job.height, pattern)
        if form == "b64_json":
            item = {"b64_json": base64.b64encode(image).decode()}
        else:
            item = {"url": f"{origin}{URL_PREFIX}{state.images.put(image)}.png"}
        if revised is not None:
            item["revised_prompt"] = revised
        data.append(item)
    return orjson.dumps({"created": int(time.time()), "data": data})


def stored_id(path: str) -> str | None:
    """The image id in `/_sandbox/images/<id>.png`, or None for any other shape."""
    name = path[len(URL_PREFIX) :]
    return name[:-4] if name.endswith(".png") and len(name) > 4 and "/" not in name else None
