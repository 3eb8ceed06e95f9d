"""Validation of the one-answer routes (embeddings, images, moderations): every rule, with its exact
OpenAI-style param path and code, and the bodies OpenAI's docs show accepted."""

from __future__ import annotations

from typing import Any

import pytest

from libs.errors import InvalidRequest
from services.edge.validation import (
    MAX_EMBEDDING_INPUTS,
    validate_embedding_request,
    validate_image_request,
    validate_moderation_request,
)

TYPE, VALUE, MISSING = "invalid_type", "invalid_value", "missing_required_parameter"


def embedding(**fields: Any) -> dict[str, Any]:
    return {"model": "text-embedding-3-small", "input": "The food was delicious", **fields}


def image(**fields: Any) -> dict[str, Any]:
    return {"model": "dall-e-3", "prompt": "A cute baby sea otter", **fields}


def moderation(**fields: Any) -> dict[str, Any]:
    return {"model": "omni-moderation-latest", "input": "I want to hug them.", **fields}


def images(body: Any) -> list[str]:
    return validate_image_request(body, max_n=8)


def expect_error(validate: Any, body: Any, param: str | None, code: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        validate(body)
    err = caught.value
    assert (err.param, err.code, err.status) == (param, code, 400), err.message
    assert err.message and (param is None or f"'{param}'" in err.message)
    assert set(err.body()["error"]) == {"message", "type", "param", "code"}


# ---- embeddings -------------------------------------------------------------------------------

EMBEDDING_ACCEPTED = [
    embedding(),
    embedding(input=["a", "b"]),
    embedding(input=[0, 15339, 1917]),
    embedding(input=[[1, 2], [3]]),
    embedding(input=["x"] * MAX_EMBEDDING_INPUTS),
    embedding(encoding_format="float", dimensions=256, user="u-1"),
    embedding(encoding_format="base64"),
    embedding(encoding_format=None, dimensions=None, user=None),  # null is absent
]

EMBEDDING_REJECTED = [
    ({"input": "x"}, "model", MISSING),
    (embedding(model=None), "model", MISSING),
    (embedding(model=""), "model", VALUE),
    (embedding(model=3), "model", TYPE),
    ({"model": "m"}, "input", MISSING),
    (embedding(input=None), "input", MISSING),
    (embedding(input=""), "input", VALUE),
    (embedding(input=[]), "input", VALUE),
    (embedding(input=["a", "b", "c", ""]), "input[3]", VALUE),
    (embedding(input=["a", 1]), "input[1]", TYPE),
    (embedding(input=[1, -1]), "input[1]", VALUE),
    (embedding(input=[1, 2.5]), "input[1]", TYPE),
    (embedding(input=[1, True]), "input[1]", TYPE),
    (embedding(input=[[1], []]), "input[1]", VALUE),
    (embedding(input=[[1], [2, -3]]), "input[1][1]", VALUE),
    (embedding(input=[[1], "a"]), "input[1]", TYPE),
    (embedding(input=[None]), "input[0]", TYPE),
    (embedding(input=[{"text": "a"}]), "input[0]", TYPE),
    (embedding(input=5), "input", TYPE),
    (embedding(input={"text": "a"}), "input", TYPE),
    (embedding(input=["x"] * (MAX_EMBEDDING_INPUTS + 1)), "input", VALUE),
    (embedding(encoding_format="int8"), "encoding_format", VALUE),
    (embedding(encoding_format=1), "encoding_format", TYPE),
    (embedding(dimensions=0), "dimensions", VALUE),
    (embedding(dimensions=1.0), "dimensions", TYPE),
    (embedding(dimensions="256"), "dimensions", TYPE),
    (embedding(user=7), "user", TYPE),
    ([embedding()], None, TYPE),
]


@pytest.mark.parametrize("body", EMBEDDING_ACCEPTED)
def test_embedding_accepted(body: dict[str, Any]) -> None:
    assert validate_embedding_request(body) == []


@pytest.mark.parametrize(("body", "param", "code"), EMBEDDING_REJECTED)
def test_embedding_rejected(body: Any, param: str | None, code: str) -> None:
    expect_error(validate_embedding_request, body, param, code)


def test_embedding_unknown_fields_are_returned() -> None:
    assert validate_embedding_request(embedding(extra_body=1, input_type="query")) == ["extra_body", "input_type"]


def test_embedding_first_violation_in_table_order() -> None:
    # whatever order the client wrote them in, `input` (first in OpenAI's docs) is named first
    expect_error(validate_embedding_request, {"encoding_format": "x", "model": "", "input": []}, "input", VALUE)


# ---- images -----------------------------------------------------------------------------------

IMAGE_ACCEPTED = [
    image(),
    image(size="1024x1024"),
    image(size="1024*1024"),  # seed 004's spelling
    image(size="auto"),
    image(size="1792x1024", quality="hd", style="vivid", n=1, response_format="url", user="u"),
    image(response_format="b64_json", n=8),
    image(background="transparent", moderation="low", output_format="webp", output_compression=50),
    image(quality="a-future-quality"),  # forwarded: the upstream judges the value
]

IMAGE_REJECTED = [
    ({"model": "m"}, "prompt", MISSING),
    (image(prompt=""), "prompt", VALUE),
    (image(prompt=["a"]), "prompt", TYPE),
    ({"prompt": "p"}, "model", MISSING),
    (image(model=""), "model", VALUE),
    (image(n=0), "n", VALUE),
    (image(n=11), "n", VALUE),
    (image(n=9), "n", VALUE),  # above the gateway's MAX_N (8 here), below OpenAI's 10
    (image(n=2.0), "n", TYPE),
    (image(n="2"), "n", TYPE),
    (image(size="1024"), "size", VALUE),
    (image(size="1024X1024"), "size", VALUE),
    (image(size="0x1024"), "size", VALUE),
    (image(size="-1x1024"), "size", VALUE),
    (image(size="1024x1024 "), "size", VALUE),
    (image(size="1024x1024\n"), "size", VALUE),
    (image(size=""), "size", VALUE),
    (image(size=1024), "size", TYPE),
    (image(response_format="png"), "response_format", VALUE),
    (image(response_format=True), "response_format", TYPE),
    (image(quality=1), "quality", TYPE),
    (image(style=["vivid"]), "style", TYPE),
    (image(output_compression=0.5), "output_compression", TYPE),
    (image(user={}), "user", TYPE),
    ("draw", None, TYPE),
]


@pytest.mark.parametrize("body", IMAGE_ACCEPTED)
def test_image_accepted(body: dict[str, Any]) -> None:
    assert images(body) == []


@pytest.mark.parametrize(("body", "param", "code"), IMAGE_REJECTED)
def test_image_rejected(body: Any, param: str | None, code: str) -> None:
    expect_error(images, body, param, code)


def test_image_n_is_bounded_by_openai_even_with_a_large_max_n() -> None:
    expect_error(lambda body: validate_image_request(body, max_n=128), image(n=11), "n", VALUE)
    assert validate_image_request(image(n=10), max_n=128) == []


# ---- moderations ------------------------------------------------------------------------------

TEXT_PART = {"type": "text", "text": "...text to classify goes here..."}
IMAGE_PART = {"type": "image_url", "image_url": {"url": "https://example.com/image.png"}}

MODERATION_ACCEPTED = [
    moderation(),
    {"input": "no model: the upstream's default"},
    moderation(input=["a", "b"]),
    moderation(input=[TEXT_PART, IMAGE_PART]),
    moderation(input=[{"type": "a-future-type", "other": 1}]),
    moderation(input=""),  # forwarded: the upstream judges an empty text
]

MODERATION_REJECTED = [
    ({"model": "m"}, "input", MISSING),
    (moderation(input=None), "input", MISSING),
    (moderation(input=[]), "input", VALUE),
    (moderation(input=5), "input", TYPE),
    (moderation(input={"type": "text"}), "input", TYPE),
    (moderation(input=["a", "b", "c", 4]), "input[3]", TYPE),
    (moderation(input=[[1]]), "input[0]", TYPE),
    (moderation(input=["a", TEXT_PART]), "input[1]", TYPE),
    (moderation(input=[TEXT_PART, "a"]), "input[1]", TYPE),
    (moderation(input=[{"text": "no type"}]), "input[0].type", MISSING),
    (moderation(input=[TEXT_PART, {"type": 1}]), "input[1].type", TYPE),
    (moderation(input=[{"type": "text", "text": 5}]), "input[0].text", TYPE),
    (moderation(input=[{"type": "image_url", "image_url": "https://x"}]), "input[0].image_url", TYPE),
    (moderation(input=[{"type": "image_url", "image_url": {}}]), "input[0].image_url.url", MISSING),
    (moderation(input=[{"type": "image_url", "image_url": {"url": 1}}]), "input[0].image_url.url", TYPE),
    (moderation(model=5), "model", TYPE),
]


@pytest.mark.parametrize("body", MODERATION_ACCEPTED)
def test_moderation_accepted(body: dict[str, Any]) -> None:
    assert validate_moderation_request(body) == []


@pytest.mark.parametrize(("body", "param", "code"), MODERATION_REJECTED)
def test_moderation_rejected(body: Any, param: str | None, code: str) -> None:
    expect_error(validate_moderation_request, body, param, code)
