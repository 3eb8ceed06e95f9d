"""The sandbox's /v1/embeddings, driven as a real subprocess with the openai SDK and httpx."""

from __future__ import annotations

import base64
import math
import struct
import time

import httpx
import openai
import pytest

from libs.devproc import Proc
from tests.integration import test_sandbox
from tests.integration.test_sandbox import KEY, assert_error_body, events, mark, wait_event

# the sandbox process and clients of test_sandbox.py (module scope: one sandbox for this module)
sandbox = test_sandbox.sandbox
http = test_sandbox.http
sdk = test_sandbox.sdk


def norm(vector: list[float]) -> float:
    return math.sqrt(sum(x * x for x in vector))


async def embed(http: httpx.AsyncClient, **body: object) -> httpx.Response:
    return await http.post("/v1/embeddings", json=body)


async def test_float_embeddings_via_sdk(sdk: openai.AsyncOpenAI) -> None:
    result = await sdk.embeddings.create(model="text-embedding-3-small", input=["hello world", "another text"],
                                         encoding_format="float")
    assert result.object == "list" and result.model == "text-embedding-3-small"
    assert [d.index for d in result.data] == [0, 1] and all(d.object == "embedding" for d in result.data)
    first, second = (d.embedding for d in result.data)
    assert len(first) == len(second) == 1536
    assert abs(norm(first) - 1) < 1e-5 and abs(norm(second) - 1) < 1e-5
    assert first != second
    # ~4 bytes a token: "hello world" is 3, "another text" is 3
    assert (result.usage.prompt_tokens, result.usage.total_tokens) == (6, 6)
    again = await sdk.embeddings.create(model="text-embedding-3-small", input="hello world", encoding_format="float")
    assert again.data[0].embedding == first  # deterministic, and independent of the batch around it


async def test_base64_equals_float(http: httpx.AsyncClient, sdk: openai.AsyncOpenAI) -> None:
    floats = (await embed(http, model="sandbox-embedding", input="same text")).json()["data"][0]["embedding"]
    raw = (await embed(http, model="sandbox-embedding", input="same text", encoding_format="base64")).json()
    packed = base64.b64decode(raw["data"][0]["embedding"])
    assert len(packed) == 64 * 4
    assert list(struct.unpack("<64f", packed)) == floats  # little-endian float32, bit for bit
    # the SDK asks for base64 by default and decodes it itself
    decoded = await sdk.embeddings.create(model="sandbox-embedding", input="same text")
    assert decoded.data[0].embedding == floats


async def test_token_array_inputs(http: httpx.AsyncClient) -> None:
    one = (await embed(http, model="sandbox-embedding", input=[1, 2, 3])).json()
    assert len(one["data"]) == 1 and one["usage"]["prompt_tokens"] == 3
    many = (await embed(http, model="sandbox-embedding", input=[[1, 2, 3], [4, 5]])).json()
    assert [d["index"] for d in many["data"]] == [0, 1] and many["usage"]["prompt_tokens"] == 5
    assert many["data"][0]["embedding"] == one["data"][0]["embedding"]
    assert many["data"][1]["embedding"] != one["data"][0]["embedding"]


async def test_dimensions_truncate_and_renormalise(http: httpx.AsyncClient) -> None:
    full = (await embed(http, model="text-embedding-3-small", input="shorten me")).json()["data"][0]["embedding"]
    short = (await embed(http, model="text-embedding-3-small", input="shorten me", dimensions=256)).json()
    vector = short["data"][0]["embedding"]
    assert len(vector) == 256 and abs(norm(vector) - 1) < 1e-5
    head = norm(full[:256])
    assert all(abs(a - b / head) < 1e-6 for a, b in zip(vector, full[:256], strict=True))
    e5 = (await embed(http, model="intfloat/e5-large-v2", input="x")).json()
    assert len(e5["data"][0]["embedding"]) == 1024
    refused = await embed(http, model="intfloat/e5-large-v2", input="x", dimensions=256)
    assert refused.status_code == 400
    assert_error_body(refused.json(), None)
    assert refused.json()["error"]["param"] == "dimensions"
    for bad in (0, 1537, "64"):
        response = await embed(http, model="text-embedding-3-small", input="x", dimensions=bad)
        assert response.status_code == 400, bad


async def test_invalid_inputs_get_openai_400s(http: httpx.AsyncClient) -> None:
    bad_inputs: list[object] = ["", [], [""], ["ok", ""], [[]], [1, "two"], [[1], "two"], [-1], {"x": 1}, None,
                               ["x"] * 2049]
    for value in bad_inputs:
        response = await embed(http, model="sandbox-embedding", input=value)
        assert response.status_code == 400, (value, response.text)
        assert_error_body(response.json(), None)
        assert response.json()["error"]["type"] == "invalid_request_error"
    assert (await embed(http, model="sandbox-embedding", input=["x"] * 2048)).status_code == 200
    assert (await embed(http, model="sandbox-embedding", input="x", encoding_format=None, dimensions=None)).is_success
    for body in ({"model": "sandbox-embedding"}, {"input": "x"},
                 {"model": "sandbox-embedding", "input": "x", "encoding_format": "int8"}):
        response = await http.post("/v1/embeddings", json=body)
        assert response.status_code == 400, body
    malformed = await http.post("/v1/embeddings", content=b"{nope", headers={"content-type": "application/json"})
    assert malformed.status_code == 400
    assert (await http.get("/v1/embeddings")).status_code == 405


async def test_unknown_model_404_and_listing(http: httpx.AsyncClient, sdk: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await sdk.embeddings.create(model="m-one", input="a chat model does not embed")
    assert caught.value.code == "model_not_found"
    listed = [m.id async for m in sdk.models.list()]
    assert {"sandbox-embedding", "text-embedding-3-small", "intfloat/e5-large-v2"} <= set(listed)
    model = await sdk.models.retrieve("intfloat/e5-large-v2")
    assert (model.id, model.object) == ("intfloat/e5-large-v2", "model")


async def test_auth_and_directives(sandbox: Proc, http: httpx.AsyncClient) -> None:
    async with httpx.AsyncClient(base_url=sandbox.url) as anonymous:
        response = await anonymous.post("/v1/embeddings", json={"model": "sandbox-embedding", "input": "x"})
    assert response.status_code == 401
    assert_error_body(response.json(), "invalid_api_key")

    plain = (await embed(http, model="sandbox-embedding", input="a vector")).json()["data"][0]["embedding"]
    tagged = await embed(http, model="sandbox-embedding", input=f"a vector [sandbox mark={(tag := mark())}]")
    assert tagged.json()["data"][0]["embedding"] == plain  # a directive does not move the vector
    (event,) = await events(http, tag)
    assert (event["path"], event["model"], event["status"]) == ("/v1/embeddings", "sandbox-embedding", 200)

    limited = await embed(http, model="sandbox-embedding", input=["fine", "x [sandbox status=429 echo_key=1]"])
    assert (limited.status_code, limited.headers["retry-after"]) == (429, "1")
    assert limited.json()["error"]["code"] == "rate_limit_exceeded" and KEY in limited.json()["error"]["message"]

    started = time.monotonic()
    slow = await embed(http, model="sandbox-embedding", input="x [sandbox latency_ms=120]")
    assert slow.status_code == 200 and time.monotonic() - started >= 0.12

    tag = mark()
    with pytest.raises(httpx.ReadTimeout):
        await http.post("/v1/embeddings", json={"model": "sandbox-embedding", "input": f"[sandbox hang=1 mark={tag}]"},
                        timeout=0.3)
    event = await wait_event(http, tag, "disconnected_at")
    assert (event["outcome"], event["status"]) == ("disconnected", None)

    typo = await embed(http, model="sandbox-embedding", input="x [sandbox statuz=500]")
    assert typo.status_code == 400 and "statuz" in typo.json()["error"]["message"]


def test_model_lists_from_env() -> None:
    from services.sandbox.config import Settings
    from services.sandbox.embeddings import models

    settings = Settings.from_env({"SANDBOX_EMBEDDING_MODELS": " text-embedding-3-small , my-org/bge=768 ",
                                  "SANDBOX_IMAGE_MODELS": "img", "SANDBOX_MODERATION_MODELS": "text-moderation-latest"})
    served = models(settings)
    assert (served["text-embedding-3-small"].dim, served["text-embedding-3-small"].shortens) == (1536, True)
    assert (served["my-org/bge"].dim, served["my-org/bge"].shortens) == (768, False)
    assert settings.listed_models() == ("sandbox-chat", "sandbox-fast", "text-embedding-3-small", "my-org/bge",
                                        "img", "text-moderation-latest")
    for bad in ("x=", "x=0", "=5", "x=abc"):
        with pytest.raises(ValueError, match="SANDBOX_EMBEDDING_MODELS"):
            Settings.from_env({"SANDBOX_EMBEDDING_MODELS": bad})
