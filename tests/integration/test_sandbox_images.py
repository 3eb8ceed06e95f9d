"""The sandbox's /v1/images/generations: real PNGs (decoded here independently), both answer forms."""

from __future__ import annotations

import base64
import struct
import time
import zlib

import httpx
import openai
import pytest

from libs.devproc import Proc
from tests.integration import test_sandbox
from tests.integration.test_sandbox import assert_error_body, events, mark, wait_event

# the sandbox process and clients of test_sandbox.py (module scope: one sandbox for this module)
sandbox = test_sandbox.sandbox
http = test_sandbox.http
sdk = test_sandbox.sdk

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def decode_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and the RGB rows of an 8-bit truecolour PNG with filter 0, every CRC checked."""
    assert data[:8] == SIGNATURE
    pos = 8
    chunks: list[tuple[bytes, bytes]] = []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body), kind
        chunks.append((kind, body))
        pos += 12 + length
    assert pos == len(data)
    assert chunks[0][0] == b"IHDR" and chunks[-1] == (b"IEND", b"")
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (depth, colour, compression, filtering, interlace) == (8, 2, 0, 0, 0)
    raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    stride = 1 + width * 3
    assert len(raw) == stride * height
    rows = [raw[y * stride : (y + 1) * stride] for y in range(height)]
    assert all(row[0] == 0 for row in rows)  # filter type None
    return width, height, [row[1:] for row in rows]


async def generate(http: httpx.AsyncClient, **body: object) -> httpx.Response:
    return await http.post("/v1/images/generations", json=body)


async def test_b64_json_png_via_sdk(sdk: openai.AsyncOpenAI) -> None:
    result = await sdk.images.generate(prompt="a red bicycle", model="sandbox-image", n=2, size="256x128",
                                       response_format="b64_json", user="user-1")
    assert isinstance(result.created, int) and abs(result.created - time.time()) < 60
    assert result.data is not None and len(result.data) == 2
    pictures = []
    for image in result.data:
        assert image.url is None and image.revised_prompt is None and image.b64_json is not None
        width, height, rows = decode_png(base64.b64decode(image.b64_json))
        assert (width, height) == (256, 128)
        assert len({rows[y][x * 3 : x * 3 + 3] for y in range(0, 128, 16) for x in range(0, 256, 32)}) > 8
        pictures.append(rows)
    assert pictures[0] != pictures[1]  # each index its own picture
    again = await sdk.images.generate(prompt="a red bicycle", model="sandbox-image", size="256x128",
                                      response_format="b64_json")
    assert again.data is not None and again.data[0].b64_json is not None
    assert decode_png(base64.b64decode(again.data[0].b64_json))[2] == pictures[0]  # deterministic
    other = await sdk.images.generate(prompt="a blue bicycle", model="sandbox-image", size="256x128",
                                      response_format="b64_json")
    assert other.data is not None and other.data[0].b64_json is not None
    assert decode_png(base64.b64decode(other.data[0].b64_json))[2] != pictures[0]


async def test_url_form_is_fetchable(http: httpx.AsyncClient, sandbox: Proc) -> None:
    body = (await generate(http, prompt="a lighthouse", model="stabilityai/stable-diffusion-xl-base-1.0",
                           size="64*48")).json()  # url is OpenAI's default form; SDXL writes `W*H`
    (item,) = body["data"]
    assert set(item) == {"url"}  # no revised_prompt from this model
    assert item["url"].startswith(sandbox.url + "/_sandbox/images/") and item["url"].endswith(".png")
    async with httpx.AsyncClient() as anonymous:  # like a CDN link: no API key needed
        fetched = await anonymous.get(item["url"])
        assert fetched.status_code == 200 and fetched.headers["content-type"] == "image/png"
        width, height, rows = decode_png(fetched.content)
        assert (width, height) == (64, 48)
        inline = (await generate(http, prompt="a lighthouse", model="stabilityai/stable-diffusion-xl-base-1.0",
                                 size="64x48", response_format="b64_json")).json()
        assert decode_png(base64.b64decode(inline["data"][0]["b64_json"]))[2] == rows
        missing = await anonymous.get(sandbox.url + "/_sandbox/images/0123456789abcdef.png")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


async def test_revised_prompt_from_dall_e_3(sdk: openai.AsyncOpenAI) -> None:
    result = await sdk.images.generate(prompt="a cat [sandbox image_form=b64_json]", model="dall-e-3",
                                       size="1024x1024")
    assert result.data is not None
    (image,) = result.data
    assert image.revised_prompt and "a cat" in image.revised_prompt and "[sandbox" not in image.revised_prompt
    assert image.b64_json is not None
    width, height, _ = decode_png(base64.b64decode(image.b64_json))
    assert (width, height) == (1024, 1024)


async def test_image_form_directive_overrides_the_request(http: httpx.AsyncClient) -> None:
    forced_url = (await generate(http, prompt="x [sandbox image_form=url]", size="16x16",
                                 response_format="b64_json")).json()
    assert set(forced_url["data"][0]) == {"url"}
    forced_b64 = (await generate(http, prompt="x [sandbox image_form=b64_json]", size="16x16",
                                 response_format="url")).json()
    assert set(forced_b64["data"][0]) == {"b64_json"}
    bad = await generate(http, prompt="x [sandbox image_form=jpeg]")
    assert bad.status_code == 400 and "image_form" in bad.json()["error"]["message"]


async def test_noise_pattern_is_big(http: httpx.AsyncClient) -> None:
    body = (await generate(http, prompt="bench [sandbox image_pattern=noise]", size="512x512",
                           response_format="b64_json")).json()
    png = base64.b64decode(body["data"][0]["b64_json"])
    assert decode_png(png)[:2] == (512, 512)
    assert 0.95e6 < len(body["data"][0]["b64_json"]) < 1.15e6  # the ~1 MB answer benchmarks ask for


async def test_invalid_requests_get_openai_400s(http: httpx.AsyncClient, sdk: openai.AsyncOpenAI) -> None:
    bad: list[dict[str, object]] = [
        {}, {"prompt": ""}, {"prompt": 3}, {"prompt": "x", "n": 0}, {"prompt": "x", "n": 11}, {"prompt": "x", "n": "2"},
        {"prompt": "x", "size": "1024"}, {"prompt": "x", "size": "0x10"}, {"prompt": "x", "size": "4096x4096"},
        {"prompt": "x", "size": "10 x 10"}, {"prompt": "x", "size": 1024}, {"prompt": "x", "response_format": "png"},
        {"prompt": "x", "user": 7},
    ]
    for body in bad:
        response = await generate(http, **body)
        assert response.status_code == 400, (body, response.text)
        assert_error_body(response.json(), None)
    assert (await generate(http, prompt="x", size="2048x1")).status_code == 200
    with pytest.raises(openai.NotFoundError) as caught:
        await sdk.images.generate(prompt="x", model="m-one")
    assert caught.value.code == "model_not_found"
    assert (await http.get("/v1/images/generations")).status_code == 405


async def test_auth_and_directives(sandbox: Proc, http: httpx.AsyncClient) -> None:
    async with httpx.AsyncClient(base_url=sandbox.url) as anonymous:
        response = await anonymous.post("/v1/images/generations", json={"prompt": "x"})
    assert response.status_code == 401
    assert_error_body(response.json(), "invalid_api_key")

    tag = mark()
    failing = await generate(http, prompt=f"x [sandbox status=503 mark={tag}]")
    assert failing.status_code == 503 and failing.json()["error"]["type"] == "server_error"
    (event,) = await events(http, tag)
    assert (event["path"], event["model"], event["status"]) == ("/v1/images/generations", "sandbox-image", 503)

    started = time.monotonic()
    slow = await generate(http, prompt="x [sandbox latency_ms=120]", size="8x8")
    assert slow.status_code == 200 and time.monotonic() - started >= 0.12

    tag = mark()
    with pytest.raises(httpx.ReadTimeout):
        await http.post("/v1/images/generations", json={"prompt": f"[sandbox hang=1 mark={tag}]"}, timeout=0.3)
    event = await wait_event(http, tag, "disconnected_at")
    assert (event["outcome"], event["status"]) == ("disconnected", None)
