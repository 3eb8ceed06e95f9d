"""The sandbox's /v1/moderations: OpenAI's response shape, deterministic keyword scoring."""

from __future__ import annotations

import time

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

CATEGORIES = {
    "harassment", "harassment/threatening", "hate", "hate/threatening", "illicit", "illicit/violent", "self-harm",
    "self-harm/intent", "self-harm/instructions", "sexual", "sexual/minors", "violence", "violence/graphic",
}  # fmt: skip


async def moderate(http: httpx.AsyncClient, **body: object) -> httpx.Response:
    return await http.post("/v1/moderations", json=body)


async def test_flagged_violence_via_sdk(sdk: openai.AsyncOpenAI) -> None:
    result = await sdk.moderations.create(input="I want to kill them.")
    assert result.id.startswith("modr-") and result.model == "omni-moderation-latest"
    (verdict,) = result.results
    assert verdict.flagged and verdict.categories.violence
    assert verdict.category_scores.violence > 0.5
    assert not verdict.categories.sexual and verdict.category_scores.sexual < 0.01
    calm = await sdk.moderations.create(input="What a lovely day for a picnic.")
    assert not calm.results[0].flagged


async def test_exact_shape(http: httpx.AsyncClient) -> None:
    body = (await moderate(http, input=["I want to kill them.", "hello there"])).json()
    assert set(body) == {"id", "model", "results"}
    first, second = body["results"]
    for result in (first, second):
        assert set(result) == {"flagged", "categories", "category_scores", "category_applied_input_types"}
        assert set(result["categories"]) == set(result["category_scores"]) == CATEGORIES
        assert set(result["category_applied_input_types"]) == CATEGORIES
        assert all(types == ["text"] for types in result["category_applied_input_types"].values())
        assert all(type(v) is bool for v in result["categories"].values())
        assert all(type(v) is float and 0 < v < 1 for v in result["category_scores"].values())
        assert result["flagged"] == any(result["categories"].values())
    assert first["flagged"] and first["categories"]["violence"] and not second["flagged"]
    again = (await moderate(http, input="hello there")).json()
    assert again["results"][0]["category_scores"] == second["category_scores"]  # deterministic
    assert again["id"] != body["id"]


async def test_legacy_text_model_and_multimodal(http: httpx.AsyncClient) -> None:
    legacy = (await moderate(http, model="text-moderation-latest", input="how to shoplift and kill")).json()
    (result,) = legacy["results"]
    assert legacy["model"] == "text-moderation-latest"
    assert set(result) == {"flagged", "categories", "category_scores"}  # no applied input types
    assert set(result["categories"]) == CATEGORIES - {"illicit", "illicit/violent"}
    parts = [{"type": "text", "text": "how to shoplift"},
             {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]
    omni = (await moderate(http, input=parts)).json()
    (result,) = omni["results"]  # one result for the parts together
    assert result["categories"]["illicit"] and result["flagged"]
    applied = result["category_applied_input_types"]
    assert applied["violence"] == ["text", "image"] and applied["illicit"] == ["text"]
    refused = await moderate(http, model="text-moderation-latest", input=parts)
    assert refused.status_code == 400


async def test_invalid_requests(http: httpx.AsyncClient, sdk: openai.AsyncOpenAI) -> None:
    bad: list[dict[str, object]] = [
        {}, {"input": []}, {"input": 5}, {"input": ["x", 1]}, {"input": [{"type": "audio"}]}, {"input": "x", "model": 3}
    ]
    for body in bad:
        response = await http.post("/v1/moderations", json=body)
        assert response.status_code == 400, (body, response.text)
        assert_error_body(response.json(), None)
    with pytest.raises(openai.NotFoundError) as caught:
        await sdk.moderations.create(input="x", model="m-one")
    assert caught.value.code == "model_not_found"
    assert (await http.get("/v1/moderations")).status_code == 405


async def test_auth_and_directives(sandbox: Proc, http: httpx.AsyncClient) -> None:
    async with httpx.AsyncClient(base_url=sandbox.url) as anonymous:
        response = await anonymous.post("/v1/moderations", json={"input": "x"})
    assert response.status_code == 401
    assert_error_body(response.json(), "invalid_api_key")

    tag = mark()
    verdict = (await moderate(http, input=f"kill [sandbox mark={tag}]")).json()
    assert verdict["results"][0]["categories"]["violence"]
    (event,) = await events(http, tag)
    assert (event["path"], event["model"], event["status"]) == ("/v1/moderations", "omni-moderation-latest", 200)

    assert (await moderate(http, input="x [sandbox status=500]")).status_code == 500
    started = time.monotonic()
    assert (await moderate(http, input="x [sandbox latency_ms=120]")).status_code == 200
    assert time.monotonic() - started >= 0.12

    tag = mark()
    with pytest.raises(httpx.ReadTimeout):
        await http.post("/v1/moderations", json={"input": f"[sandbox hang=1 mark={tag}]"}, timeout=0.3)
    event = await wait_event(http, tag, "disconnected_at")
    assert (event["outcome"], event["status"]) == ("disconnected", None)
