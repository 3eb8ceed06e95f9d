"""image-worker's checks on what an upstream says is an image: its type from its magic bytes (a
stored object's name and content type follow it), and no garbage stored or passed on as one."""

from __future__ import annotations

import base64
import time
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from libs.errors import UpstreamProtocolError
from libs.openai_upstream.config import Upstream
from libs.worker_metrics import WorkerMetrics
from services.image_worker.backend import ImageBackend
from services.image_worker.imagetype import GIF, JPEG, PNG, WEBP, image_type


@pytest.mark.parametrize(("data", "expected"), [
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", PNG),
    (b"\xff\xd8\xff\xe0\x00\x10JFIF", JPEG),
    (b"RIFF\x24\x00\x00\x00WEBPVP8 ", WEBP),
    (b"GIF89a\x01\x00\x01\x00", GIF),
    (b"GIF87a\x01\x00\x01\x00", GIF),
    (b"<html>an error page</html>", None),
    (b"RIFF\x24\x00\x00\x00WAVEfmt ", None),  # RIFF, but sound
    (b"\x89PNG", None),  # cut short
    (b"", None),
])
def test_image_type_by_magic_bytes(data: bytes, expected: object) -> None:
    assert image_type(data) == expected


def _backend() -> ImageBackend:
    upstream = Upstream(name="up", base_url="http://127.0.0.1:9/v1", api_key="", models=("m",))
    return ImageBackend([upstream], WorkerMetrics(CollectorRegistry(), "p"))


def _job() -> Any:
    return {"model": "m", "deadline": time.time() + 10}


@pytest.mark.parametrize("b64", [base64.b64encode(b"<html>not an image</html>").decode(), "not base64 at all!"])
async def test_b64_json_that_is_no_image_is_not_stored(b64: str) -> None:
    backend = _backend()
    with pytest.raises(UpstreamProtocolError) as caught:
        await backend._convert({"b64_json": b64}, "url", _job(), backend._answered_by(_job()))
    assert caught.value.upstream == "up"
    await backend.aclose()


async def test_an_item_with_neither_form_is_a_protocol_error() -> None:
    backend = _backend()
    with pytest.raises(UpstreamProtocolError, match="neither url nor b64_json"):
        await backend._convert({"revised_prompt": "x"}, "b64_json", _job(), backend._answered_by(_job()))
    await backend.aclose()
