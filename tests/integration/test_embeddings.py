"""POST /v1/embeddings through the edge and embeddings-worker with the official SDK: the built-in
model (semantics, both encodings, token arrays, its limits) and an OpenAI-compatible upstream (the
sandbox) chosen by model name."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import httpx
import numpy as np
import openai
import pytest

from tests.conftest import AUTH_KEY, BUILTIN_EMBEDDING_MODEL, Stack, wait_for_models

AUTH = {"authorization": f"Bearer {AUTH_KEY}"}
MODEL = BUILTIN_EMBEDDING_MODEL


@pytest.fixture
async def sdk(stack: Stack) -> AsyncIterator[openai.AsyncOpenAI]:
    await wait_for_models(stack, {MODEL, "text-embedding-3-small"})
    async with openai.AsyncOpenAI(base_url=stack.base_url, api_key=AUTH_KEY, max_retries=0) as client:
        yield client


def _cosine(a: list[float], b: list[float]) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


async def test_the_builtin_model_makes_semantic_sense(sdk: openai.AsyncOpenAI) -> None:
    texts = ["a cat sits on the mat", "a kitten on a rug", "stock market falls"]
    answer = await sdk.embeddings.create(model=MODEL, input=texts, encoding_format="float")
    assert answer.model == MODEL and answer.object == "list"
    assert [d.index for d in answer.data] == [0, 1, 2]
    cat, kitten, stocks = (d.embedding for d in answer.data)
    assert len(cat) == 384
    assert _cosine(cat, kitten) > _cosine(cat, stocks) + 0.2
    assert abs(np.linalg.norm(cat) - 1.0) < 1e-3
    assert answer.usage.prompt_tokens == answer.usage.total_tokens > len(texts) * 2


async def test_float_and_base64_agree(stack: Stack, sdk: openai.AsyncOpenAI) -> None:
    text = "The food was delicious and the waiter..."  # seed 001's example
    floats = (await sdk.embeddings.create(model=MODEL, input=text, encoding_format="float")).data[0].embedding
    async with httpx.AsyncClient(headers=AUTH) as client:  # raw: the SDK would decode base64 itself
        raw = (await client.post(stack.base_url + "/embeddings",
                                 json={"model": MODEL, "input": text, "encoding_format": "base64"})).json()
    decoded = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    assert np.array_equal(decoded, np.array(floats, dtype=np.float32))  # the same float32 values, exactly
    # written as float32s (at most 9 significant digits), not as the float64s they widen to
    assert max(len(repr(x)) for x in floats) <= 15
    default = await sdk.embeddings.create(model=MODEL, input=text)  # the SDK asks for base64 and decodes it
    assert np.allclose(default.data[0].embedding, floats, atol=1e-6)


async def test_token_arrays_equal_their_text(stack: Stack, sdk: openai.AsyncOpenAI) -> None:
    from services.embeddings_worker.local_model import LocalModel

    text = "hello world"
    ids = LocalModel.load().tokenize([text])[0]
    by_text = (await sdk.embeddings.create(model=MODEL, input=text, encoding_format="float")).data[0].embedding
    by_ids = await sdk.embeddings.create(model=MODEL, input=[ids[1:-1], ids], encoding_format="float")
    for item in by_ids.data:
        assert np.allclose(item.embedding, by_text, atol=1e-4)
    assert by_ids.usage.prompt_tokens == 2 * len(ids)


@pytest.mark.parametrize(
    ("body", "status", "param", "code"),
    [
        ({"model": MODEL, "input": ""}, 400, "input", None),
        ({"model": MODEL, "input": ["ok", ""]}, 400, "input[1]", None),
        ({"model": MODEL, "input": ["x"] * 2049}, 400, "input", None),
        ({"model": MODEL, "input": "word " * 600}, 400, "input", "context_length_exceeded"),
        ({"model": MODEL, "input": ["short", "word " * 600]}, 400, "input[1]", "context_length_exceeded"),
        ({"model": MODEL, "input": "x", "dimensions": 64}, 400, "dimensions", None),
        ({"model": MODEL, "input": "x", "encoding_format": "hex"}, 400, "encoding_format", None),
        ({"model": MODEL, "input": [[1, 2, 99999999]]}, 400, "input", None),
        ({"model": "sandbox-chat", "input": "x"}, 400, "model", "model_not_supported"),
        ({"model": "no-such-embedder", "input": "x"}, 404, "model", "model_not_found"),
    ],
)
async def test_bad_input_is_an_openai_error_naming_its_param(
    stack: Stack, body: dict[str, object], status: int, param: str, code: str | None,
) -> None:
    async with httpx.AsyncClient(headers=AUTH, timeout=30) as client:
        response = await client.post(stack.base_url + "/embeddings", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param
    if code is not None:
        assert error["code"] == code


async def test_the_dimensions_of_the_model_itself_are_accepted(sdk: openai.AsyncOpenAI) -> None:
    answer = await sdk.embeddings.create(model=MODEL, input="x", dimensions=384, encoding_format="float")
    assert len(answer.data[0].embedding) == 384


async def test_other_models_go_to_their_upstream(sdk: openai.AsyncOpenAI) -> None:
    answer = await sdk.embeddings.create(model="text-embedding-3-small", input=["a", "b"], dimensions=256,
                                         encoding_format="float")
    assert answer.model == "text-embedding-3-small"
    assert [len(d.embedding) for d in answer.data] == [256, 256]
    e5 = await sdk.embeddings.create(model="intfloat/e5-large-v2", input=["The food was delicious and the waiter."])
    assert len(e5.data[0].embedding) == 1024  # seed 004's model, through the upstream


async def test_models_list_says_the_builtin_model_embeds(sdk: openai.AsyncOpenAI) -> None:
    listed = {m.id: m.model_dump() for m in (await sdk.models.list()).data}
    assert listed[MODEL]["capabilities"] == ["embeddings"]
    assert listed[MODEL]["owned_by"] == "embeddings"
