"""image-worker with IMAGES_BACKEND=bing end to end: the official `openai` SDK through a real edge,
the worker on a pool of three Bing cookie accounts (pool `bing` in JetStream KV), and the sandbox's
Bing fake (services/sandbox/bing/: the ChatHub, the image creator). Kind `bing_image` jobs are
published on NATS directly (the edge's `/image/create` route is another branch's). What the fake
saw (`/_sandbox/bing/requests`) is how the tests judge the worker: which account ran, how often
it polled.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import httpx
import nats
import openai
import orjson
import pytest
import pytest_asyncio
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

import proto
from libs import wire
from libs.devproc import Proc, free_port, spawn_python_service
from libs.timeouts import Timeouts
from tests.conftest import AUTH_KEY, TIME_SCALE, Stack, metric, service_env, start_edge

ACCOUNTS = ("img-alice", "img-bob", "img-carol")
POOL = "bing-images"
MODEL = "bing-image-creator"
LIMITS = Timeouts.from_env({"SY_TIME_SCALE": str(TIME_SCALE)})
POLL = 3.0 * TIME_SCALE  # the worker's interval between polls
PNG = b"\x89PNG\r\n\x1a\n"


@dataclass
class Bing:
    nats_url: str
    fake: str
    log_dir: Path
    accounts_file: Path
    edge: Proc
    worker: Proc | None = None

    def start_worker(self, name: str) -> Proc:
        port = free_port()
        ws = self.fake.replace("http://", "ws://")
        env = service_env(self.nats_url, PORT=str(port), WORKER_ID=name, IMAGES_BACKEND="bing",
                          BING_BASE_URL=self.fake, SYDNEY_CREATE_URL=self.fake + "/edgesvc/turing/conversation/create",
                          SYDNEY_CHATHUB_URL=ws + "/sydney/ChatHub", SYDNEY_ACCOUNTS_FILE=str(self.accounts_file),
                          BING_IMAGE_MODELS="dall-e-bing")
        proc = spawn_python_service(name, "services.image_worker", env=env, log_dir=self.log_dir,
                                    health_url=f"http://127.0.0.1:{port}/readyz")
        proc.url = f"http://127.0.0.1:{port}"
        return proc


@pytest.fixture(scope="module")
def bing(stack: Stack, sandbox: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bing]:
    folder = tmp_path_factory.mktemp("bing-images")
    accounts = folder / "accounts.toml"
    accounts.write_text("".join(f'[[accounts]]\nname = "{a}"\ncookies = "_U=sandbox-u-{a}; MUID=m-{a}"\n\n'
                                for a in ACCOUNTS))
    edge = start_edge(stack.nats_url, stack.log_dir, name="edge-bing-images")
    setup = Bing(stack.nats_url, sandbox.url, stack.log_dir, accounts, edge)
    httpx.post(sandbox.url + "/_sandbox/bing/reset").raise_for_status()
    setup.worker = setup.start_worker("bing-images-1")
    try:
        yield setup
    finally:
        for proc in (setup.edge, setup.worker):
            if proc is not None:
                proc.stop()


async def control(bing: Bing, method: str, path: str, **kwargs: Any) -> Any:
    async with httpx.AsyncClient(base_url=bing.fake, timeout=10) as http:
        response = await http.request(method, "/_sandbox/bing/" + path, **kwargs)
        response.raise_for_status()
        return response.json()


async def log_of(bing: Bing, kind: str) -> list[dict[str, Any]]:
    return [r for r in (await control(bing, "GET", "requests"))["requests"] if r["kind"] == kind]


async def wait_live(edge: Proc, model: str = MODEL, within: float = 15.0) -> None:
    async with httpx.AsyncClient(headers={"authorization": f"Bearer {AUTH_KEY}"}) as http:
        deadline = time.monotonic() + within
        while model not in {m["id"] for m in (await http.get(edge.url + "/v1/models")).json()["data"]}:
            assert time.monotonic() < deadline, f"{model} never became live"
            await asyncio.sleep(0.05)


@pytest_asyncio.fixture
async def sdk(bing: Bing) -> AsyncIterator[openai.AsyncOpenAI]:
    await wait_live(bing.edge)
    await control(bing, "DELETE", "requests")
    async with openai.AsyncOpenAI(base_url=bing.edge.url + "/v1", api_key=AUTH_KEY, max_retries=0,
                                  timeout=30) as client:
        yield client


# ---- /v1/images/generations ---------------------------------------------------------------------


async def test_url_images_are_bings_without_their_query(bing: Bing, sdk: openai.AsyncOpenAI) -> None:
    before = int(time.time())
    answer = await sdk.images.generate(model=MODEL, prompt="a red kite over hills [sandbox image]", n=2)
    assert answer.created >= before and answer.data is not None and len(answer.data) == 2
    for image in answer.data:
        assert image.url is not None and image.url.startswith(bing.fake + "/th/id/OIG.") and "?" not in image.url
        assert image.revised_prompt is not None and image.revised_prompt.startswith("a picture of ")
        assert "a red kite over hills" in image.revised_prompt
        async with httpx.AsyncClient() as http:
            assert (await http.get(image.url)).content.startswith(PNG)
    chats = await log_of(bing, "chat")
    assert len(chats) == 1 and chats[0]["account"] in ACCOUNTS
    assert chats[0]["text"].startswith("Create image for the description: a red kite over hills")
    assert chats[0]["tone"] == "Creative" and chats[0]["context"]
    creators = await log_of(bing, "creator")
    assert len(creators) == 1 and creators[0]["account"] == chats[0]["account"]


async def test_b64_json_images_are_fetched_pngs(sdk: openai.AsyncOpenAI) -> None:
    answer = await sdk.images.generate(model="dall-e-bing", prompt="a teapot [sandbox image]", n=1,
                                       size="1024x1024", response_format="b64_json")
    assert answer.data is not None and len(answer.data) == 1
    assert answer.data[0].url is None and answer.data[0].b64_json is not None
    assert base64.b64decode(answer.data[0].b64_json).startswith(PNG)


async def test_more_images_than_one_creation_makes_take_another_round(bing: Bing, sdk: openai.AsyncOpenAI) -> None:
    answer = await sdk.images.generate(model=MODEL, prompt="six lanterns [sandbox image] [sandbox polls=0]", n=6)
    assert answer.data is not None and len(answer.data) == 6  # the fake makes 4 a creation
    assert len({image.url for image in answer.data}) == 6
    assert len(await log_of(bing, "creator")) == 2


async def test_a_size_bing_does_not_make_is_a_400_naming_size(bing: Bing, sdk: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await sdk.images.generate(model=MODEL, prompt="a boat [sandbox image]", size="512x512")
    assert caught.value.status_code == 400
    body: Any = caught.value.body
    assert body["param"] == "size" and body["code"] == "invalid_value"
    assert await log_of(bing, "chat") == []  # refused before any account was used


async def test_polls_until_the_images_are_ready(bing: Bing, sdk: openai.AsyncOpenAI) -> None:
    answer = await sdk.images.generate(model=MODEL, prompt="a slow owl [sandbox image] [sandbox polls=4]")
    assert answer.data is not None and len(answer.data) == 1
    polls = await log_of(bing, "creator_poll")
    assert [p["state"] for p in polls] == ["pending"] * 4 + ["ready"]
    stamps = [p["time"] for p in polls]
    assert all(b - a >= POLL * 0.9 for a, b in itertools.pairwise(stamps))  # the interval is kept


async def test_a_rejected_prompt_is_a_content_policy_violation(bing: Bing, sdk: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await sdk.images.generate(model=MODEL, prompt="something [sandbox image] [sandbox rejected]")
    body: Any = caught.value.body
    assert body["code"] == "content_policy_violation"
    assert body["message"] == "the prompt for image creation has been rejected by Bing"
    assert len(await log_of(bing, "chat")) == 1  # not tried on another account


async def test_no_image_in_the_turn_is_an_upstream_error_not_retried(bing: Bing, sdk: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        await sdk.images.generate(model=MODEL, prompt="just chat [sandbox tokens=3]")
    assert caught.value.status_code == 502
    body: Any = caught.value.body
    assert body["code"] == "upstream_error" and body["message"] == "Bing made no image for this prompt"
    assert len(await log_of(bing, "chat")) == 1


async def test_never_ready_images_time_out_within_the_jobs_deadline(bing: Bing) -> None:
    total = 2.5  # seconds: well under 15 polls, so the deadline, not the attempts, ends the polling
    edge = start_edge(bing.nats_url, bing.log_dir, name="edge-bing-short", SY_TIMEOUT_TOTAL=str(total / TIME_SCALE))
    try:
        await wait_live(edge)
        async with openai.AsyncOpenAI(base_url=edge.url + "/v1", api_key=AUTH_KEY, max_retries=0, timeout=30) as sdk:
            started = time.monotonic()
            with pytest.raises(openai.APIStatusError) as caught:
                await sdk.images.generate(model=MODEL, prompt="a ghost [sandbox image] [sandbox never]")
            took = time.monotonic() - started
    finally:
        edge.stop()
    assert caught.value.status_code == 504
    body: Any = caught.value.body
    assert body["code"] == "upstream_timeout" and body["message"] == "image creation timeout"
    assert took < total
    polls = await log_of(bing, "creator_poll")
    assert 1 <= len(polls) < 15 and all(p["state"] == "pending" for p in polls)


async def test_an_account_fault_moves_the_job_to_another_account(bing: Bing, sdk: openai.AsyncOpenAI) -> None:
    assert bing.worker is not None
    handed_back = await retried_jobs(bing.worker)
    await control(bing, "POST", "faults", json={"account": "any", "kind": "close7", "times": 1})
    answer = await sdk.images.generate(model=MODEL, prompt="a lighthouse [sandbox image]")
    assert answer.data is not None and len(answer.data) == 1
    assert await retried_jobs(bing.worker) == handed_back  # moved within the job, not handed back to the bus
    chats = await log_of(bing, "chat")
    assert [c["result"] for c in chats] == ["close7", "Success"]
    assert chats[0]["account"] != chats[1]["account"]
    assert (await log_of(bing, "creator"))[0]["account"] == chats[1]["account"]


async def retried_jobs(worker: Proc) -> float:
    async with httpx.AsyncClient() as http:
        return metric((await http.get(worker.url + "/metrics")).text, "switchyard_worker_jobs_total", outcome="retried")


# ---- kind bing_image, on the bus --------------------------------------------------------------------


def partner_url(base: str, prompt: str) -> str:
    return (f"{base}/images/create?partner=sydney&re=1&showselective=1&sude=1&kseed=7500&SFX=2&gptexp=unknown"
            f"&q={quote_plus(prompt)}&iframeid={uuid.uuid4()}")


@pytest_asyncio.fixture
async def bus(bing: Bing) -> AsyncIterator[NATS]:
    await wait_live(bing.edge)
    await control(bing, "DELETE", "requests")
    client = await nats.connect(bing.nats_url, name="test-image-worker-bing")
    yield client
    await client.drain()


async def run_job(bus: NATS, body: dict[str, Any], **patch: Any) -> dict[str, Any]:
    """Publishes one bing_image job as the edge would; its result or error reply."""
    edge, token = "bing-image-test-edge", uuid.uuid4().hex[:16]
    now = time.time()
    job: dict[str, Any] = {
        "type": "job", "job_id": token, "request_id": f"bing-{token}", "kind": "bing_image", "model": MODEL,
        "pool": POOL, "reply": proto.reply_subject(edge, token), "index_offset": 0, "created": now,
        "start_by": now + LIMITS.queue_wait, "deadline": now + LIMITS.total,
        "timeouts": {"first_token": LIMITS.first_token, "idle": LIMITS.idle, "heartbeat": LIMITS.heartbeat},
        "body": body, **patch,
    }
    done: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

    async def on_reply(msg: Msg) -> None:
        for reply in wire.decode_batch(msg.data):
            if reply["type"] in ("result", "error") and not done.done():
                done.set_result(reply)

    sub = await bus.subscribe(proto.reply_subject(edge, token), cb=on_reply)
    try:
        await bus.jetstream().publish(proto.job_subject(POOL), orjson.dumps(job))
        return await asyncio.wait_for(done, 20)
    finally:
        await sub.unsubscribe()


async def test_a_bing_image_job_answers_generate_image_result(bing: Bing, bus: NATS) -> None:
    prompt = "a picture of a fox [sandbox polls=1]"
    url = partner_url(bing.fake, prompt)
    reply = await run_job(bus, {"image": {"text": prompt, "url": url}})
    assert reply["type"] == "result", reply
    result = reply["body"]
    assert result["text"] == prompt and result["url"] == url
    assert len(result["image_urls"]) == 4 and all("?w=270&h=270" in u for u in result["image_urls"])
    assert type(result["duration"]) is int and result["duration"] > POLL * 1e9
    creator = (await log_of(bing, "creator"))[0]
    assert creator["account"] in ACCOUNTS


async def test_a_bing_image_job_on_the_callers_cookies(bing: Bing, bus: NATS) -> None:
    prompt = "a picture of a hat [sandbox polls=0]"
    reply = await run_job(bus, {"image": {"text": prompt, "url": partner_url(bing.fake, prompt)}},
                          cookies="_U=sandbox-u-img-dave")
    assert reply["type"] == "result", reply
    assert [r["account"] for r in await log_of(bing, "creator")] == ["img-dave"]


async def test_cookies_bing_signs_out_are_the_callers_400(bing: Bing, bus: NATS) -> None:
    prompt = "a picture of a cat"
    reply = await run_job(bus, {"image": {"text": prompt, "url": partner_url(bing.fake, prompt)}},
                          cookies="_U=not-a-sandbox-user")
    assert reply["type"] == "error"
    assert reply["error"]["code"] == "invalid_cookies" and reply["error"]["param"] == "cookies"
    assert not reply["error"]["retryable"]
    assert "not-a-sandbox-user" not in orjson.dumps(reply).decode()


async def test_a_url_off_bing_is_refused_before_any_request(bing: Bing, bus: NATS) -> None:
    prompt = "a picture of a key"
    elsewhere = partner_url(f"http://127.0.0.1:{free_port()}", prompt)
    reply = await run_job(bus, {"image": {"text": prompt, "url": elsewhere}})
    assert reply["type"] == "error"
    assert reply["error"]["code"] == "invalid_value" and reply["error"]["param"] == "image.url"
    assert (await control(bing, "GET", "requests"))["requests"] == []
