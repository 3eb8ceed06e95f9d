"""sydney-worker end to end: the official `openai` SDK and httpx through a real edge, two real
worker replicas sharing one pool of three Bing cookie accounts in JetStream KV, and the sandbox's
fake of Bing (services/sandbox/bing/, faithful to the fact sheet, sharing no code with the worker).
What the fake saw (`/_sandbox/bing/requests`) and the pool's own KV values are how the tests judge
the worker: which account ran a turn, what context and image it sent, what each failure did.

The caller's-own-cookies tests stand in for the edge (it has no route carrying cookies yet): they
publish the job on the bus as the edge would and read the worker's replies.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import nats
import openai
import orjson
import pytest
import pytest_asyncio
from nats.js.errors import BucketNotFoundError, NoKeysError

import proto
from libs import wire
from libs.account_pool.buckets import ACCOUNTS_BUCKET, CONVERSATIONS_BUCKET
from libs.account_pool.pool import AccountPool, AccountSpec
from libs.bing.context import fold_openai_messages
from libs.devproc import Proc, free_port, spawn_python_service
from libs.timeouts import Timeouts
from libs.tokens import chat_usage
from services.sandbox.bing.answer import answer_words
from services.sandbox.png import tiles
from tests.conftest import AUTH_KEY, TIME_SCALE, service_env, start_edge

USERS = ("alice", "bob", "carol")
POOL = "sydney"  # the worker pool (the edge routes to it)
ACCOUNT_POOL = "bing"  # the account pool in SY_V1_ACCOUNTS (libs.bing.config.POOL)
CREATE = "/edgesvc/turing/conversation/create"
PNG = tiles(8, 8, 1)
LIMITS = Timeouts.from_env({"SY_TIME_SCALE": str(TIME_SCALE)})


def cookie(user: str) -> str:
    # a second long cookie beside _U: every value is a secret that must never reach a log or the KV
    return f"_U=sandbox-u-{user}; KievRPSSecAuth=kiev-secret-{user}-0123456789"


@dataclass
class Bing:
    nats_url: str
    fake: str
    log_dir: Path
    accounts_file: Path
    edge: Proc
    workers: list[Proc] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return self.edge.url + "/v1"

    def start_worker(self, name: str, accounts_file: Path | None = None, nats_url: str | None = None) -> Proc:
        port = free_port()
        ws = self.fake.replace("http://", "ws://")
        env = service_env(nats_url or self.nats_url, PORT=str(port), WORKER_POOL=POOL, WORKER_ID=name,
                          SYDNEY_CREATE_URL=self.fake + CREATE, SYDNEY_CHATHUB_URL=ws + "/sydney/ChatHub",
                          BING_BASE_URL=self.fake, SYDNEY_ACCOUNTS_FILE=str(accounts_file or self.accounts_file),
                          SYDNEY_MODEL_ALIASES="bing-precise=precise")
        proc = spawn_python_service(name, "services.sydney_worker", env=env, log_dir=self.log_dir,
                                    health_url=f"http://127.0.0.1:{port}/readyz")
        proc.url = f"http://127.0.0.1:{port}"
        return proc


def accounts_toml(users: tuple[str, ...], budget: int | None = None) -> str:
    extra = f"daily_budget = {budget}\n" if budget else ""
    return "".join(f'[[accounts]]\nname = "{u}"\ncookies = "{cookie(u)}"\n{extra}\n' for u in users)


async def fake(bing: Bing, method: str, path: str, **kwargs: Any) -> Any:
    async with httpx.AsyncClient(base_url=bing.fake, timeout=10) as http:
        response = await http.request(method, "/_sandbox/bing" + path, **kwargs)
        response.raise_for_status()
        return response.json()


async def chats(bing: Bing) -> list[dict[str, Any]]:
    return [r for r in (await fake(bing, "GET", "/requests"))["requests"] if r["kind"] == "chat"]


async def wait_live(base_url: str, model: str = "sydney-creative", within: float = 15.0) -> None:
    async with httpx.AsyncClient(headers={"authorization": f"Bearer {AUTH_KEY}"}) as http:
        deadline = asyncio.get_running_loop().time() + within
        while True:
            listed = {m["id"] for m in (await http.get(base_url + "/models")).json()["data"]}
            if model in listed:
                return
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"{model} never became live")
            await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
def bing(stack: Any, sandbox: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bing]:
    folder = tmp_path_factory.mktemp("sydney")
    accounts = folder / "accounts.toml"
    accounts.write_text(accounts_toml(USERS))
    # gpt-3.5* is routed to the Sydney pool by the operator: seed 000's model mapping applies
    edge = start_edge(stack.nats_url, stack.log_dir, name="edge-sydney", SY_TIMEOUT_QUEUE_WAIT="30",
                      SY_ROUTES="gpt-3.5*=sydney")
    bing = Bing(stack.nats_url, sandbox.url, stack.log_dir, accounts, edge)
    httpx.post(sandbox.url + "/_sandbox/bing/reset").raise_for_status()
    bing.workers = [bing.start_worker("sydney-1"), bing.start_worker("sydney-2")]
    try:
        yield bing
    finally:
        for proc in [bing.edge, *bing.workers]:
            proc.stop()


@pytest_asyncio.fixture
async def sdk(bing: Bing) -> AsyncIterator[openai.AsyncOpenAI]:
    await wait_live(bing.base_url)
    async with openai.AsyncOpenAI(base_url=bing.base_url, api_key=AUTH_KEY, max_retries=0, timeout=30) as client:
        yield client


@pytest_asyncio.fixture
async def kv(bing: Bing) -> AsyncIterator[Any]:
    nc = await nats.connect(bing.nats_url)
    try:
        yield nc.jetstream()
    finally:
        await nc.close()


async def account_state(js: Any, name: str) -> dict[str, Any]:
    entry = await (await js.key_value(ACCOUNTS_BUCKET)).get(f"{ACCOUNT_POOL}.{name}")
    return dict(orjson.loads(entry.value))


async def restore(js: Any, name: str) -> None:
    """The operator's restore (tools.accounts --restore): lifts a quarantine or a cooldown."""
    pool = AccountPool(js, ACCOUNT_POOL, [AccountSpec(u) for u in USERS], holder="test")
    await pool.start()
    try:
        await pool.restore(name)
    finally:
        await pool.stop()


async def worker_said(bing: Bing, text: str, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not any(text in proc.log() for proc in bing.workers):
        assert time.monotonic() < deadline, f"no worker logged {text!r}"
        await asyncio.sleep(0.05)


async def stream_text(sdk: openai.AsyncOpenAI, **kwargs: Any) -> tuple[str, list[Any], str | None]:
    stream = await sdk.chat.completions.create(stream=True, **kwargs)
    text, deltas, finish = "", [], None
    async for chunk in stream:
        for choice in chunk.choices:
            deltas.append(choice.delta)
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
    return text, deltas, finish


# ---- OpenAI chat ---------------------------------------------------------------------------------


HISTORY: Any = [
    {"role": "system", "content": "You are Sydney."},
    {"role": "user", "content": "Hello!"},
    {"role": "assistant", "content": "Hi!"},
    {"role": "user", "content": "tell me about rivers [sandbox tokens=10]"},
]


async def test_streamed_and_whole_answers_fold_the_history_into_the_context(
    bing: Bing, sdk: openai.AsyncOpenAI,
) -> None:
    prompt, context, _ = fold_openai_messages(HISTORY)
    expected = " ".join(answer_words(prompt, context, None, 10))

    raw = await sdk.chat.completions.with_raw_response.create(model="sydney-creative", messages=HISTORY)
    whole = raw.parse()
    assert whole.choices[0].message.content == expected
    assert whole.choices[0].finish_reason == "stop" and whole.model == "sydney-creative"
    assert raw.headers["x-switchyard-conversation-id"]
    usage = chat_usage(HISTORY, expected, "gpt-4")
    assert whole.usage is not None and whole.usage.prompt_tokens == usage["prompt_tokens"]
    assert whole.usage.completion_tokens == usage["completion_tokens"]
    seen = (await chats(bing))[-1]
    assert seen["text"] == prompt and seen["context"] == context  # SydneyQt's folding, sent as is
    assert seen["tone"] == "Creative" and seen["isStartOfSession"] is True
    assert "nosearchall" in seen["optionsSets"] and "gpt4tmncnp" in seen["optionsSets"]  # no tool_choice: no search
    assert seen["account"] in USERS

    text, deltas, finish = await stream_text(sdk, model="sydney-creative", messages=HISTORY)
    assert text == expected and finish == "stop"
    conversation = deltas[0].model_extra["conversation"]  # the first delta carries the conversation
    assert conversation["conversationId"] == (await chats(bing))[-1]["conversationId"]
    assert conversation["secAccessToken"].startswith("sy1.") and conversation["bearerToken"] == ""
    assert all("conversation" not in (d.model_extra or {}) for d in deltas[1:])


async def test_the_model_picks_the_style(bing: Bing, sdk: openai.AsyncOpenAI) -> None:
    for model, tone in [("sydney-precise", "Precise"), ("sydney-balanced", "Balanced"), ("bing-precise", "Precise"),
                        ("gpt-3.5-turbo-0125", "Balanced")]:
        answer = await sdk.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
        assert answer.model == model
        assert (await chats(bing))[-1]["tone"] == tone, model


async def test_an_image_data_url_is_uploaded_then_attached(bing: Bing, sdk: openai.AsyncOpenAI) -> None:
    url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    content: Any = [{"type": "text", "text": "what is this [sandbox tokens=3]"},
                    {"type": "image_url", "image_url": {"url": url}}]
    answer = await sdk.chat.completions.create(model="sydney-creative",
                                               messages=[{"role": "user", "content": content}])
    assert answer.choices[0].message.content == " ".join(answer_words("what is this", "", "known", 3))
    requests = (await fake(bing, "GET", "/requests"))["requests"]
    upload = [r for r in requests if r["kind"] == "kblob"][-1]
    assert upload["cookies"] == []  # as SydneyQt: the upload carries no cookies
    assert "bcid=" in requests[-1]["imageUrl"]


async def test_search_results_and_suggestions_reach_the_sdk_as_extra_fields(sdk: openai.AsyncOpenAI) -> None:
    text, deltas, finish = await stream_text(
        sdk, model="sydney-creative", tool_choice="auto",
        messages=[{"role": "user", "content": "find rivers [sandbox search] [sandbox tokens=4]"}])
    extras = [d.model_extra or {} for d in deltas]
    results = next(e["search_results"] for e in extras if "search_results" in e)
    assert results and all(set(r) == {"index", "link", "title"} for r in results)
    assert results[0]["link"].startswith("https://sandbox.invalid/search/")
    suggested = next(e["suggested_responses"] for e in extras if "suggested_responses" in e)
    assert suggested and all(isinstance(s, str) for s in suggested)
    assert text and finish == "stop"


# ---- failures and the pool -----------------------------------------------------------------------


@pytest.mark.parametrize(("value", "state"), [
    ("Throttled", "cooling"), ("CaptchaChallenge", "quarantined"), ("UnauthorizedRequest", "quarantined"),
    ("InvalidSession", "quarantined"),
])
async def test_a_failure_moves_the_turn_to_another_account_and_tells_the_pool(
    bing: Bing, sdk: openai.AsyncOpenAI, kv: Any, value: str, state: str,
) -> None:
    await fake(bing, "POST", "/faults", json={"account": "any", "kind": value})
    before = len(await chats(bing))
    answer = await sdk.chat.completions.create(
        model="sydney-creative", messages=[{"role": "user", "content": f"about {value} [sandbox tokens=3]"}])
    assert answer.choices[0].message.content  # transparently answered by another account
    ran = (await chats(bing))[before:]
    assert [r["result"] for r in ran] == [value, "Success"], ran
    failed, answered = ran[0]["account"], ran[1]["account"]
    assert failed != answered
    seen = await account_state(kv, failed)
    if state == "cooling":
        assert seen["cool_until"] > time.time() and "Throttled" in seen["cool_reason"] and not seen["quarantined"]
    else:
        assert seen["quarantined"] and seen["reason"].startswith(value)
    assert not (await account_state(kv, answered))["quarantined"]
    # moved by the worker within the job's one delivery (not a redelivery by the runtime)
    await worker_said(bing, f"account {failed}: {value} before the first output; the turn moves to another account")
    await restore(kv, failed)


async def test_a_failure_after_the_first_token_ends_the_stream_in_band(bing: Bing) -> None:
    await wait_live(bing.base_url)
    body = {"model": "sydney-creative", "stream": True,
            "messages": [{"role": "user", "content": "go [sandbox tokens=8] [sandbox result=Throttled after=3]"}]}
    async with httpx.AsyncClient(timeout=30, headers={"authorization": f"Bearer {AUTH_KEY}"}) as http:
        response = await http.post(bing.base_url + "/chat/completions", json=body)
    events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    error = orjson.loads(events[-2])["error"]
    assert error["code"] == "rate_limit_exceeded"
    assert [c["finish_reason"] for c in orjson.loads(events[-3])["choices"]] == ["length"]
    text = "".join((c.get("delta") or {}).get("content") or "" for e in events[:-2] for c in orjson.loads(e)["choices"])
    assert text  # the first tokens went out; no retry after them
    failed = (await chats(bing))[-1]
    assert failed["result"] == "Throttled"
    async with await nats.connect(bing.nats_url) as nc:
        await restore(nc.jetstream(), failed["account"])


# ---- conversations -------------------------------------------------------------------------------


async def test_the_returned_conversation_continues_on_its_account(bing: Bing, sdk: openai.AsyncOpenAI) -> None:
    _, deltas, _ = await stream_text(sdk, model="sydney-creative",
                                     messages=[{"role": "user", "content": "remember seven"}])
    conversation = deltas[0].model_extra["conversation"]
    first = (await chats(bing))[-1]
    for _ in range(2):  # whichever replica takes it opens the seal (the key is the account's cookies)
        again = await sdk.chat.completions.create(
            model="sydney-creative", messages=[{"role": "user", "content": "which number?"}],
            extra_body={"conversation": conversation})
        assert again.choices[0].message.content
        seen = (await chats(bing))[-1]
        assert seen["conversationId"] == first["conversationId"] and seen["account"] == first["account"]
        assert seen["isStartOfSession"] is False and seen["text"] == "which number?"

    tampered = dict(conversation, secAccessToken=conversation["secAccessToken"][:-6] + "AAAAAA")
    with pytest.raises(openai.BadRequestError) as refused:
        await sdk.chat.completions.create(model="sydney-creative", messages=[{"role": "user", "content": "x"}],
                                          extra_body={"conversation": tampered})
    assert refused.value.code == "invalid_conversation"
    # one not sealed by this gateway needs the cookies it was made with: none were sent
    plain = dict(conversation, secAccessToken="plain-token")
    with pytest.raises(openai.BadRequestError) as refused:
        await sdk.chat.completions.create(model="sydney-creative", messages=[{"role": "user", "content": "x"}],
                                          extra_body={"conversation": plain})
    assert refused.value.code == "invalid_conversation"


# ---- the caller's own cookies (the test publishes the jobs as the edge would) ---------------------


def make_job(kind: str, model: str, body: dict[str, Any], edge: str, **extra: Any) -> dict[str, Any]:
    token = uuid.uuid4().hex[:16]
    now = time.time()
    job: dict[str, Any] = {
        "type": "job", "job_id": token, "request_id": f"own-{token}", "kind": kind, "model": model,
        "pool": POOL, "reply": proto.reply_subject(edge, token), "index_offset": 0, "created": now,
        "start_by": now + LIMITS.queue_wait, "deadline": now + LIMITS.total,
        "timeouts": {"first_token": LIMITS.first_token, "idle": LIMITS.idle, "heartbeat": LIMITS.heartbeat},
        "body": body,
    }
    job.update(extra)
    return job


async def run_job(nc: Any, job: dict[str, Any], edge: str) -> list[dict[str, Any]]:
    """The replies of the job's answered attempt, up to its end or error."""
    done = asyncio.Event()
    replies: list[dict[str, Any]] = []

    async def on_reply(msg: Any) -> None:
        for message in wire.decode_batch(msg.data):
            replies.append(message)
            if message["type"] in ("end", "error"):
                done.set()

    sub = await nc.subscribe(proto.reply_subject(edge, job["job_id"]), cb=on_reply)
    try:
        await nc.jetstream().publish(proto.job_subject(POOL), orjson.dumps(job))
        await asyncio.wait_for(done.wait(), 30)
    finally:
        await sub.unsubscribe()
    return replies


OWN = "dave-0f3a9c"  # the caller's Bing account on the fake: no pool account
OWN_COOKIES = f"_U=sandbox-u-{OWN}; KievRPSSecAuth=callers-own-secret-77aa11"


async def test_a_callers_own_cookies_run_the_turn_and_never_reach_a_log_or_the_kv(bing: Bing) -> None:
    await wait_live(bing.base_url)
    edge = "own-cookies-edge"
    async with await nats.connect(bing.nats_url) as nc:
        messages = [{"role": "user", "content": "mine [sandbox tokens=3]"}]
        replies = await run_job(nc, make_job("chat", "sydney-creative", {"model": "sydney-creative",
                                                                          "messages": messages}, edge,
                                             cookies=OWN_COOKIES), edge)
        deltas = [c["delta"] for r in replies if r["type"] == "delta" for c in r["choices"]]
        assert "".join(d.get("content", "") for d in deltas) == " ".join(answer_words("mine", "", None, 3))
        assert next(r for r in replies if r["type"] == "end").get("account") is None  # no pool account
        conversation = deltas[0]["conversation"]
        assert conversation["secAccessToken"].startswith("sy1.-.")  # sealed under the caller's cookies
        seen = (await chats(bing))[-1]
        assert seen["account"] == OWN

        # continuing it needs the same cookies; the native kind relays SydneyQt's events
        body = {"op": "chat", "prompt": "again [sandbox search] [sandbox tokens=3]", "context": "",
                "conversation": conversation}
        replies = await run_job(nc, make_job("sydney", "sydney-creative", body, edge, cookies=OWN_COOKIES), edge)
        events = [r["event"] for r in replies if r["type"] == "event"]
        assert [e["type"] for e in events][:1] == ["search_query"]
        assert {"message", "search_result", "suggested_responses"} <= {e["type"] for e in events}
        seen = (await chats(bing))[-1]
        assert seen["account"] == OWN and seen["conversationId"] == conversation["conversationId"]
        assert seen["isStartOfSession"] is False

        refused = await run_job(nc, make_job("sydney", "sydney-creative", body, edge), edge)
        assert refused[-1]["type"] == "error" and refused[-1]["error"]["code"] == "invalid_conversation"
        assert "send the same ones" in refused[-1]["error"]["message"]  # said in words, not scrubbed away

        # their own conversation, not sealed by us, whose token Bing refuses at the upgrade: the
        # conversation is the client's to fix, nothing is said against their cookies
        bogus = {"conversationId": conversation["conversationId"], "clientId": conversation["clientId"],
                 "secAccessToken": "not-a-token-bing-issued"}
        refused = await run_job(nc, make_job("sydney", "sydney-creative", dict(body, conversation=bogus), edge,
                                             cookies=OWN_COOKIES), edge)
        assert refused[-1]["type"] == "error" and refused[-1]["error"]["code"] == "invalid_conversation"

        upload = {"op": "upload", "image": base64.b64encode(PNG).decode(), "content_type": "image/png"}
        replies = await run_job(nc, make_job("sydney", "sydney-creative", upload, edge, cookies=OWN_COOKIES), edge)
        url = next(r["body"]["url"] for r in replies if r["type"] == "result")
        assert url.startswith(bing.fake + "/images/blob?bcid=")
        assert (await fake(bing, "GET", "/requests"))["requests"][-1]["account"] == OWN

        js = nc.jetstream()
        scanned = 0
        for bucket in (ACCOUNTS_BUCKET, CONVERSATIONS_BUCKET):
            try:
                store = await js.key_value(bucket)
                keys = await store.keys()
            except (BucketNotFoundError, NoKeysError):  # nobody wrote one yet: nothing to leak
                continue
            for key in keys:
                value = (await store.get(key)).value or b""
                scanned += 1
                for secret in ("callers-own-secret-77aa11", f"sandbox-u-{OWN}", "kiev-secret-"):
                    assert secret.encode() not in value, (bucket, key)
        assert scanned >= len(USERS)  # the pool's accounts at least
    logs = "".join(p.read_text() for p in bing.log_dir.glob("*.log") if p.stem in ("sydney-1", "sydney-2",
                                                                                     "edge-sydney"))
    assert logs and "Traceback" not in logs
    for secret in ["callers-own-secret-77aa11", f"sandbox-u-{OWN}", *(f"kiev-secret-{u}" for u in USERS),
                   *(f"sandbox-u-{u}" for u in USERS)]:
        assert secret not in logs


# ---- the daily budget (a NATS, edge and worker of its own: the pool's KV is per NATS) -------------


async def test_a_spent_daily_budget_cools_the_account_until_midnight(
    private_nats: Proc, sandbox: Proc, bing: Bing, tmp_path: Path,
) -> None:
    accounts = tmp_path / "accounts.toml"
    accounts.write_text(accounts_toml(("erin",), budget=1))
    edge = start_edge(private_nats.url, bing.log_dir, name="edge-sydney-budget")
    worker = bing.start_worker("sydney-budget", accounts, nats_url=private_nats.url)
    try:
        await wait_live(edge.url + "/v1")
        async with openai.AsyncOpenAI(base_url=edge.url + "/v1", api_key=AUTH_KEY, max_retries=0, timeout=30) as sdk:
            answer = await sdk.chat.completions.create(model="sydney-creative",
                                                       messages=[{"role": "user", "content": "one"}])
            assert answer.choices[0].message.content
        async with await nats.connect(private_nats.url) as nc:
            seen = await account_state(nc.jetstream(), "erin")
        midnight = (int(time.time()) // 86400 + 1) * 86400
        assert seen["budget_used"] == 1 and seen["cool_until"] == midnight
        assert "daily conversation budget" in seen["cool_reason"]
    finally:
        worker.stop()
        edge.stop()
