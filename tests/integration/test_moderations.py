"""POST /v1/moderations through the edge and openai-worker to an upstream that offers it (the
sandbox), with the official SDK: OpenAI's response shape, the default model, and a 404 that says
how to configure one when no worker serves it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import openai
import pytest

from libs.devproc import start_nats_server
from tests.conftest import AUTH_KEY, Stack, start_edge, wait_for_models

AUTH = {"authorization": f"Bearer {AUTH_KEY}"}


@pytest.fixture
async def sdk(stack: Stack) -> AsyncIterator[openai.AsyncOpenAI]:
    await wait_for_models(stack, {"omni-moderation-latest", "text-moderation-latest"})
    async with openai.AsyncOpenAI(base_url=stack.base_url, api_key=AUTH_KEY, max_retries=0) as client:
        yield client


async def test_seed_001s_example_is_flagged_for_violence(sdk: openai.AsyncOpenAI) -> None:
    moderation = await sdk.moderations.create(input="I want to kill them.")  # no model: OpenAI's default
    assert moderation.model == "omni-moderation-latest"
    assert moderation.id.startswith("modr-")
    (result,) = moderation.results
    assert result.flagged and result.categories.violence
    assert result.category_scores.violence > 0.5
    assert not result.categories.sexual


async def test_an_array_of_inputs_gets_one_result_each(sdk: openai.AsyncOpenAI) -> None:
    moderation = await sdk.moderations.create(
        model="text-moderation-latest", input=["a lovely day in the park", "I will kill you"])
    assert moderation.model == "text-moderation-latest"
    assert [r.flagged for r in moderation.results] == [False, True]
    scores = moderation.results[0].category_scores.model_dump(by_alias=True)
    assert set(scores) >= {"harassment", "hate", "self-harm", "sexual", "violence", "violence/graphic"}


async def test_models_list_says_what_each_model_serves(stack: Stack, sdk: openai.AsyncOpenAI) -> None:
    listed = {m.id: m.model_dump() for m in (await sdk.models.list()).data}
    assert listed["omni-moderation-latest"]["capabilities"] == ["moderations"]
    assert listed["sandbox-chat"]["capabilities"] == ["chat.completions", "completions"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "input"),
        ({"input": 7}, "input"),
        ({"input": ["ok", 3]}, "input[1]"),
        ({"input": "x", "model": 5}, "model"),
    ],
)
async def test_bad_input_is_a_400_naming_its_param(stack: Stack, body: dict[str, object], param: str) -> None:
    async with httpx.AsyncClient(headers=AUTH) as client:
        response = await client.post(stack.base_url + "/moderations", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


async def test_a_chat_model_does_not_moderate(stack: Stack) -> None:
    async with httpx.AsyncClient(headers=AUTH) as client:
        response = await client.post(stack.base_url + "/moderations", json={"input": "x", "model": "sandbox-chat"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "model_not_supported" and "/v1/chat/completions" in error["message"]


async def test_with_no_worker_serving_moderations_the_404_says_how_to_configure_one(stack: Stack) -> None:
    own = start_nats_server(log_dir=stack.log_dir / "no-moderation", store_dir=stack.log_dir / "no-moderation" / "js")
    edge = start_edge(own.url, stack.log_dir, name="edge-no-moderation")
    try:
        async with httpx.AsyncClient(headers=AUTH) as client:
            response = await client.post(edge.url + "/v1/moderations", json={"input": "hello"})
        assert response.status_code == 404
        error = response.json()["error"]
        assert error["code"] == "model_not_found" and error["param"] == "model"
        assert "omni-moderation-latest" in error["message"] and "OPENAI_MODERATION_MODELS" in error["message"]
    finally:
        edge.stop()
        own.stop()
