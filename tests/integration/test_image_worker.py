"""image-worker through the edge: the official openai SDK calls the session's edge, which routes the
image models the worker announces to it; its upstream is the sandbox (real PNGs, decoded here with
every CRC checked). The sandbox's `image_form` directive plays an upstream that answers in one form
only, so both conversions run: a `url` asked of a b64-only upstream is stored and served by the
edge, a `b64_json` asked of a url-only upstream is fetched. The session's wiretap checks every bus
message, the result bodies against proto/schemas/v1/image_result.json."""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Literal

import httpx
import openai
import pytest
import pytest_asyncio

from libs.devproc import Proc, free_port, spawn_python_service
from tests.conftest import AUTH_KEY, SANDBOX_KEY, Stack, service_env, start_edge, wait_for_models
from tests.integration.test_sandbox_images import decode_png
from tests.wiretap import Wiretap

MODELS = ("sandbox-image", "stabilityai/stable-diffusion-xl-base-1.0", "dall-e-3")
TINY_MODEL = "tiny-fetch-image"  # served by a sandbox of this module's own, to a worker with a tiny fetch limit
TINY_FETCH_MAX_BYTES = 100
EDGE_IMAGE_URL = re.compile(r"^/images/[A-Za-z0-9_-]{32}\.png$")


def start_image_worker(
    nats_url: str, log_dir: Path, upstream_url: str, *, name: str, pool: str, models: str, **extra: str,
) -> Proc:
    port = free_port()
    env = service_env(nats_url, PORT=str(port), WORKER_POOL=pool, WORKER_ID=name,
                      IMAGES_BASE_URL=upstream_url + "/v1", IMAGES_API_KEY=SANDBOX_KEY, IMAGES_MODELS=models, **extra)
    return spawn_python_service(name, "services.image_worker", env=env, log_dir=log_dir,
                                health_url=f"http://127.0.0.1:{port}/readyz")


@pytest.fixture(scope="module")
def image_worker(stack: Stack) -> Iterator[Proc]:
    proc = start_image_worker(stack.nats_url, stack.log_dir, stack.sandbox_url, name="image-worker", pool="images",
                              models=",".join(MODELS))
    yield proc
    proc.stop(grace=5)


@pytest_asyncio.fixture(loop_scope="session")
async def sdk(stack: Stack, image_worker: Proc) -> AsyncIterator[openai.AsyncOpenAI]:
    await wait_for_models(stack, set(MODELS))
    async with openai.AsyncOpenAI(base_url=stack.base_url, api_key=AUTH_KEY, max_retries=0, timeout=30) as client:
        yield client


@pytest_asyncio.fixture(loop_scope="session")
async def direct(stack: Stack) -> AsyncIterator[openai.AsyncOpenAI]:
    """The sandbox itself, for the bytes a conversion must carry unchanged."""
    async with openai.AsyncOpenAI(base_url=stack.sandbox_url + "/v1", api_key=SANDBOX_KEY, max_retries=0) as client:
        yield client


async def sandbox_png(direct: openai.AsyncOpenAI, prompt: str, size: str = "256x256") -> bytes:
    """What the sandbox draws for `prompt` (it is deterministic, and draws the prompt without its
    directives), as b64_json straight from it."""
    prompt = prompt.replace("image_form=url", "image_form=b64_json")
    result = await direct.images.generate(model="sandbox-image", prompt=prompt, size=size,
                                          response_format="b64_json")
    assert result.data is not None and result.data[0].b64_json is not None
    return base64.b64decode(result.data[0].b64_json)


async def test_b64_json_asked_and_given_is_a_valid_png(sdk: openai.AsyncOpenAI) -> None:
    result = await sdk.images.generate(model="sandbox-image", prompt="a red fox", size="256x256",
                                       response_format="b64_json")
    assert result.data is not None and len(result.data) == 1
    (image,) = result.data
    assert image.url is None and image.b64_json is not None
    assert decode_png(base64.b64decode(image.b64_json))[:2] == (256, 256)


async def test_url_asked_and_given_is_the_upstreams_own_url(sdk: openai.AsyncOpenAI, stack: Stack) -> None:
    result = await sdk.images.generate(model="sandbox-image", prompt="a green owl", size="256x256",
                                       response_format="url")
    assert result.data is not None
    (image,) = result.data
    assert image.b64_json is None and image.url is not None
    assert image.url.startswith(stack.sandbox_url + "/_sandbox/images/")  # passed through, not stored
    async with httpx.AsyncClient() as http:
        fetched = await http.get(image.url)
    assert fetched.status_code == 200
    assert decode_png(fetched.content)[:2] == (256, 256)


async def test_url_asked_of_a_b64_only_upstream_is_stored_and_served_by_the_edge(
    sdk: openai.AsyncOpenAI, direct: openai.AsyncOpenAI, stack: Stack,
) -> None:
    prompt = "[sandbox image_form=b64_json] a blue whale"
    result = await sdk.images.generate(model="sandbox-image", prompt=prompt, size="256x256")  # url: the default
    assert result.data is not None
    (image,) = result.data
    assert image.b64_json is None and image.url is not None
    assert image.url.startswith(stack.edge_url)
    assert EDGE_IMAGE_URL.match(image.url.removeprefix(stack.edge_url)), image.url
    async with httpx.AsyncClient() as http:  # no key: the URL's name is its secret
        served = await http.get(image.url)
    assert served.status_code == 200
    assert served.headers["content-type"] == "image/png"
    assert decode_png(served.content)[:2] == (256, 256)
    assert served.content == await sandbox_png(direct, prompt)


async def test_b64_json_asked_of_a_url_only_upstream_is_fetched(
    sdk: openai.AsyncOpenAI, direct: openai.AsyncOpenAI,
) -> None:
    prompt = "[sandbox image_form=url] a yellow kite"
    result = await sdk.images.generate(model="sandbox-image", prompt=prompt, size="256x256",
                                       response_format="b64_json")
    assert result.data is not None
    (image,) = result.data
    assert image.url is None and image.b64_json is not None
    png = base64.b64decode(image.b64_json)
    assert decode_png(png)[:2] == (256, 256)
    assert png == await sandbox_png(direct, prompt)


async def test_a_slashed_model_with_a_starred_size(sdk: openai.AsyncOpenAI) -> None:
    result = await sdk.images.generate(model="stabilityai/stable-diffusion-xl-base-1.0", prompt="a harbour at dusk",
                                       size="1024*1024", response_format="b64_json")
    assert result.data is not None and result.data[0].b64_json is not None
    assert decode_png(base64.b64decode(result.data[0].b64_json))[:2] == (1024, 1024)


async def test_n_2_gives_two_different_images(sdk: openai.AsyncOpenAI) -> None:
    result = await sdk.images.generate(model="sandbox-image", prompt="two cats", size="256x256", n=2,
                                       response_format="b64_json")
    assert result.data is not None and len(result.data) == 2
    pngs = [base64.b64decode(image.b64_json or "") for image in result.data]
    assert all(decode_png(png)[:2] == (256, 256) for png in pngs)
    assert pngs[0] != pngs[1]


async def test_n_2_stored_gives_two_different_urls(sdk: openai.AsyncOpenAI) -> None:
    result = await sdk.images.generate(model="sandbox-image", prompt="[sandbox image_form=b64_json] two dogs",
                                       size="256x256", n=2)
    assert result.data is not None and len(result.data) == 2
    urls = [image.url or "" for image in result.data]
    async with httpx.AsyncClient() as http:
        served = [(await http.get(url)).content for url in urls]
    assert urls[0] != urls[1] and served[0] != served[1]
    assert all(decode_png(png)[:2] == (256, 256) for png in served)


@pytest.mark.parametrize("form", ["url", "b64_json"])
async def test_revised_prompt_passes_through(sdk: openai.AsyncOpenAI, form: Literal["url", "b64_json"]) -> None:
    # the upstream answers in the other form: the revised prompt survives the conversion too
    other = "b64_json" if form == "url" else "url"
    result = await sdk.images.generate(model="dall-e-3", prompt=f"[sandbox image_form={other}] a castle",
                                       size="256x256", response_format=form)
    assert result.data is not None
    (image,) = result.data
    assert image.revised_prompt == "A detailed, high-quality image of: a castle"
    assert (image.url if form == "url" else image.b64_json)


@pytest.fixture(scope="module")
def tiny_fetch_worker(stack: Stack) -> Iterator[Proc]:
    """A worker whose fetches may hold TINY_FETCH_MAX_BYTES, on a sandbox of its own (its model is
    one the shared worker does not serve, so the edge routes it here alone)."""
    port = free_port()
    upstream = spawn_python_service("sandbox-tiny", "services.sandbox", log_dir=stack.log_dir,
                                    env={"PORT": str(port), "SANDBOX_IMAGE_MODELS": TINY_MODEL},
                                    health_url=f"http://127.0.0.1:{port}/healthz")
    try:
        worker = start_image_worker(stack.nats_url, stack.log_dir, f"http://127.0.0.1:{port}",
                                    name="image-worker-tiny", pool="images-tiny", models=TINY_MODEL,
                                    IMAGES_FETCH_MAX_BYTES=str(TINY_FETCH_MAX_BYTES))
        yield worker
        worker.stop(grace=5)
    finally:
        upstream.stop()


async def test_a_fetched_image_over_the_limit_is_a_502_at_once(
    stack: Stack, tiny_fetch_worker: Proc, wiretap: Wiretap,
) -> None:
    await wait_for_models(stack, {TINY_MODEL})
    async with httpx.AsyncClient(headers={"authorization": f"Bearer {AUTH_KEY}"}, timeout=30) as http:
        response = await http.post(stack.base_url + "/images/generations", json={
            "model": TINY_MODEL, "prompt": "[sandbox image_form=url] a mountain", "size": "64x64",
            "response_format": "b64_json"})
    assert response.status_code == 502
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "upstream_too_large" and error["type"] == "upstream_error"
    assert f"more than {TINY_FETCH_MAX_BYTES} bytes" in error["message"]
    # not retried: another attempt would generate an image as large, upstream quota spent for nothing
    jobs = {j["job_id"] for j in wiretap.find("switchyard.v1.job", request_id=response.headers["x-request-id"])}
    attempts = {m["attempt"] for m in wiretap.find("switchyard.v1.reply") if m["job_id"] in jobs}
    assert jobs and attempts == {1}
    assert "/_sandbox/images/" not in error["message"]  # the URL (a signed URL's query is a credential) is not told


async def test_a_full_image_store_is_a_503_with_retry_after(private_nats: Proc, stack: Stack) -> None:
    """An edge whose image store holds 1 MiB (its least); two ~0.8 MB noise images cannot both go
    in. The store is that edge's own bus's (the session's store is roomy)."""
    log_dir = stack.log_dir / "full-store"
    edge = start_edge(private_nats.url, log_dir, name="edge-small-store", IMAGE_STORE_BYTES=str(1024 * 1024))
    try:
        worker = start_image_worker(private_nats.url, log_dir, stack.sandbox_url, name="image-worker-full",
                                    pool="images", models="sandbox-image")
        try:
            async with httpx.AsyncClient(headers={"authorization": f"Bearer {AUTH_KEY}"}, timeout=30) as http:
                await wait_for_models(Stack(private_nats.url, edge.url, stack.sandbox_url, log_dir), {"sandbox-image"})
                response = await http.post(edge.url + "/v1/images/generations", json={
                    "model": "sandbox-image", "prompt": "[sandbox image_form=b64_json image_pattern=noise] static",
                    "size": "512x512", "n": 2, "response_format": "url"})
        finally:
            worker.stop(grace=5)
    finally:
        edge.stop()
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "no_capacity" and "image store is full" in error["message"]
    assert int(response.headers["retry-after"]) >= 1


@pytest.mark.parametrize(("body", "param"), [
    ({"model": "sandbox-image"}, "prompt"),
    ({"model": "sandbox-image", "prompt": "x", "size": "big"}, "size"),
    ({"model": "sandbox-image", "prompt": "x", "n": 0}, "n"),
    ({"model": "sandbox-image", "prompt": "x", "response_format": "gif"}, "response_format"),
])
async def test_bad_input_is_a_400_naming_the_param(
    sdk: openai.AsyncOpenAI, body: dict[str, object], param: str,
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await sdk.post("/images/generations", body=body, cast_to=httpx.Response)
    assert caught.value.status_code == 400
    error = caught.value.response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
