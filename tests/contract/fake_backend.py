"""A fake upstream for every worker kind: the job body says what the "upstream" does, and the fake
writes down what happened, so the contract suite can judge the runtime from inside the worker.

Kinds (`FakeBackend(kind)`), each serving the model `fake-<kind>`:

- `chat`: streams choice deltas (`list[choice]`), one word each, then a `StreamEnd` with usage;
- `embedding`, `image`, `moderation`: a unary answer, `WholeAnswer()` then one `Result` whose body
  is valid under proto/schemas/v1/<kind>_result.json;
- `native`: an upstream's own event stream (`Event`s), as the web-chat workers relay; its jobs
  are `chat` jobs (the fake speaks no upstream's own protocol);
- `chatgpt_web` (not in `KINDS`: the contract suite's jobs are not backend-api calls): a
  chatgpt-web-worker's jobs, `{method, path, query?, json?}`. `POST /conversation` streams
  `outputs` events shaped like the ChatGPT web SSE events (cumulative `parts`), or, with
  `status` in the directives, fails before the first one with a `Result` `{"status", "body"}`;
  `GET /conversation/missing-...` answers 404 as the upstream does; every other call answers
  200 with `{"echo": {"job": <the job body>, "access_token": <whether the job had one>}}` (never
  its value). The directives are `json["fake"]` (the conversation body's unknown fields travel).
- `sydney` (not in `KINDS`): a sydney-worker, serving `sydney-creative`, `sydney-balanced` and
  `sydney-precise` for kinds `chat` and `sydney`, with features `chat` and `cookies`. A `sydney`
  job `{op: "chat", prompt, ...}` streams SydneyQt's events (`sydney_events`): a `search_query`,
  one `message` per output, `suggested_responses`, then `fake_echo`, whose text is the JSON
  `{"cookies": <whether the job had them>, "body": <the job body>}` (never the cookies' value); an
  `{op: "upload", image, content_type}` job answers `{"url": BLOB_URL + sha256(image)}`. A `chat`
  job streams deltas, the first saying `cookies=yes ` or `cookies=no `. The directives are written
  in the prompt (`prompt_directives`): `[fake fail=upstream_error retryable=0 fail_after=2]`, with
  `fail_tries=N` to fail on the first N tries only.
- `bing_image` (not in `KINDS`): image-worker's Bing backend, serving `bing-image-creator` for
  kinds `image` and `bing_image`, with feature `cookies`: a `bing_image` job answers a
  GenerateImageResult for its `image` (`bing_image_result`), an `image` job an images result
  whose `revised_prompt` says `cookies=yes` or `cookies=no`. Directives in `image.text` or `prompt`.

With `accounts` (FAKE_ACCOUNTS), the fake plays a pool of that many upstream accounts, one job at
a time each: an `admission` (libs/worker_backend.py) the runtime pulls by, and `accounts_state`.

Per-job behaviour, `body["fake"]` (all optional):

    delay_first  seconds before the first output (a unary job: after its WholeAnswer)
    meta         {"model", "headers"}: a Meta item first (what only the upstream knows)
    outputs      outputs of a streaming kind (default 3; a unary kind has one, its Result)
    gap          seconds between outputs
    hang_after   produce this many outputs, then hang until cancelled
    fail         an error code (libs/errors.py) to fail with ...
    retryable    ... with this `retryable` flag (default: the code's own) ...
    fail_after   ... after this many outputs (default 0: before the first one)
    tries        {"<try>": {overrides}}: what changes on the job's n-th run (1, 2, ...), across
                 all workers of the kind; e.g. {"1": {"hang_after": 0}} hangs on the first try only

Events: one JSON line per event (`started`, `output`, `cancelled`, `failed`, `finished`) appended
to the file named by `FAKE_EVENTS_FILE` (shared by all workers of a kind), with the job id, the
worker id, the pid, the try, the jobs running in this process (`concurrent`) and both clocks.
Each line is one `write` on an O_APPEND descriptor, so lines of several processes never mix.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import struct
import time
import zlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from libs.errors import BusError, SwitchyardError, from_wire
from libs.settings import ConfigError
from libs.worker_backend import Event, Item, Meta, Result, StreamEnd, WholeAnswer
from proto.messages import AccountsState, Feature, Job, Kind

KINDS = ("chat", "embedding", "image", "moderation", "native")
# run by the edge's own tests (tests/integration/test_edge_chatgpt_routes.py, test_edge_sydney_routes.py)
WEB_KINDS = ("chatgpt_web", "sydney", "bing_image")
STREAMING = frozenset({"chat", "native"})
# the job kind each fake kind serves: `native` has no kind of its own yet (a web chat's own events)
JOB_KIND: dict[str, Kind] = {"chat": "chat", "embedding": "embedding", "image": "image",
                             "moderation": "moderation", "native": "chat", "chatgpt_web": "chatgpt_web",
                             "sydney": "sydney", "bing_image": "bing_image"}
SYDNEY_MODELS = ("sydney-creative", "sydney-balanced", "sydney-precise")
BING_IMAGE_MODEL = "bing-image-creator"
# the fake kinds that serve several models or kinds: model -> kinds, and their features
_SERVES: dict[str, dict[str, list[Kind]]] = {
    "sydney": {model: ["chat", "sydney"] for model in SYDNEY_MODELS},
    "bing_image": {BING_IMAGE_MODEL: ["image", "bing_image"]},
}
_FEATURES: dict[str, list[Feature]] = {"sydney": ["chat", "cookies"], "bing_image": ["cookies"]}
BLOB_URL = "https://www.bing.com/images/blob?bcid="
SUGGESTIONS = ["Tell me more", "Thanks"]
_DIRECTIVES = re.compile(r"\[fake((?:\s+[a-z_]+=\S+?)*)\s*\]")


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


# a 1x1 grey PNG: what an image upstream answers, small enough for one bus message
TINY_PNG = base64.b64encode(
    b"\x89PNG\r\n\x1a\n"
    + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))  # 1x1, 8-bit greyscale
    + _png_chunk(b"IDAT", zlib.compress(b"\x00\x80"))  # filter byte, one pixel
    + _png_chunk(b"IEND", b"")
).decode()
_CREATED = 1_700_000_000


def model_of(kind: str) -> str:
    return f"fake-{kind}"


def word(i: int) -> str:
    """The i-th output's text: what the suite expects once, and only once, in an answer."""
    return f"w{i} "


def web_event(i: int, *, last: bool = False) -> dict[str, Any]:
    """The i-th event of a fake ChatGPT web turn: the assistant's text so far (`parts` is cumulative)."""
    return {"message": {"id": "a-1", "author": {"role": "assistant", "name": None, "metadata": {}},
                        "content": {"content_type": "text", "parts": ["".join(word(j) for j in range(i + 1))]},
                        "status": "finished_successfully" if last else "in_progress",
                        "end_turn": True if last else None, "metadata": {"message_type": "next"},
                        "recipient": "all"},
            "conversation_id": "c-1", "error": None}


def prompt_directives(text: str) -> dict[str, Any]:
    """The directives written in a prompt, `[fake key=value ...]` (values JSON where they parse)."""
    spec: dict[str, Any] = {}
    for match in _DIRECTIVES.finditer(text):
        for pair in match.group(1).split():
            key, _, raw = pair.partition("=")
            try:
                spec[key] = orjson.loads(raw)
            except orjson.JSONDecodeError:
                spec[key] = raw
    return spec


def sydney_events(prompt: str, outputs: int, echo: dict[str, Any]) -> list[dict[str, Any]]:
    """The native events of a fake Bing Chat turn, as a sydney-worker emits them (`{type, text}`)."""
    return [{"type": "search_query", "text": f"Searching the web for: `{prompt[:40]}`"},
            *({"type": "message", "text": word(i)} for i in range(outputs)),
            {"type": "suggested_responses", "text": orjson.dumps(SUGGESTIONS).decode()},
            {"type": "fake_echo", "text": orjson.dumps(echo).decode()}]


def bing_image_result(image: dict[str, Any]) -> dict[str, Any]:
    """The fake's GenerateImageResult for a GenerativeImage."""
    digest = hashlib.sha256(str(image.get("text")).encode()).hexdigest()[:16]
    return {"text": image.get("text"), "url": image.get("url"),
            "image_urls": [f"https://tse1.mm.bing.net/th/id/OIG.{digest}?w=270&h=270&c=6&r=0&o=5&pid=ImgGn"],
            "duration": 1_234_567_890}


def spec_for(body: dict[str, Any], try_no: int) -> dict[str, Any]:
    """The job's fake behaviour on its `try_no`-th run."""
    spec = dict(body.get("fake") or {})
    overrides = (spec.pop("tries", None) or {}).get(str(try_no)) or {}
    spec.update(overrides)
    return spec


def failure(spec: Mapping[str, Any]) -> SwitchyardError:
    err = from_wire({"code": spec["fail"], "message": "the fake upstream failed as told"})
    if "retryable" in spec:
        # the runtime reads the instance's flag (as it does for any error); the class default
        # is what a real upstream error of that code would carry
        vars(err)["retryable"] = bool(spec["retryable"])
    return err


class _Accounts:
    """`total` upstream accounts of one turn each: what a web worker's admission counts."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.busy = 0
        self._wake: list[Callable[[], None]] = []

    def available(self) -> int:
        return self.total - self.busy

    def listen(self, wake: Callable[[], None]) -> None:
        self._wake.append(wake)

    async def stop(self) -> None:
        pass  # nothing held beyond the process

    def take(self) -> None:
        if self.busy >= self.total:  # the runtime pulled past its admission: what the test catches
            # not retryable: the request fails, so a test sees the runtime broke its admission
            raise BusError("the fake's accounts were all busy: a job was pulled with none free")
        self.busy += 1

    def give_back(self) -> None:
        self.busy -= 1
        for wake in self._wake:
            wake()


class FakeBackend:
    """The Backend protocol (libs/worker_backend.py) for every kind, driven by the job body."""

    def __init__(
        self, kind: str, *, events_file: str | None = None, worker_id: str = "", accounts: int = 0, model: str = "",
    ) -> None:
        if kind not in KINDS + WEB_KINDS:
            raise ConfigError(f"FAKE_KIND must be one of {', '.join(KINDS + WEB_KINDS)}; got {kind!r}")
        self.kind = kind
        self.worker_id = worker_id
        self.features: list[Feature] = _FEATURES.get(kind) or (["chat"] if JOB_KIND[kind] == "chat" else [])
        self._serves: dict[str, list[Kind]] = _SERVES.get(kind) or {model or model_of(kind): [JOB_KIND[kind]]}
        self._events_fd: int | None = None
        self._tries_dir: Path | None = None
        if events_file:
            self._events_fd = os.open(events_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            self._tries_dir = Path(events_file + ".tries")
            self._tries_dir.mkdir(exist_ok=True)
        self.running = 0  # jobs inside `stream` now, in this process
        if accounts:  # the optional members of a backend with accounts (libs/worker_backend.py)
            self.admission = _Accounts(accounts)
            self.accounts_state = self._accounts_state

    @property
    def serves(self) -> Mapping[str, Sequence[Kind]]:
        return self._serves

    # ---- records ---------------------------------------------------------------------------------

    def _record(self, event: str, job: Job, try_no: int, **extra: Any) -> None:
        if self._events_fd is None:
            return
        line = {"event": event, "job_id": job["job_id"], "worker_id": self.worker_id, "pid": os.getpid(),
                "try": try_no, "concurrent": self.running, "wall": time.time(), "mono": time.monotonic(), **extra}
        os.write(self._events_fd, orjson.dumps(line) + b"\n")

    def _claim_try(self, job_id: str) -> int:
        """This run's number among all runs of the job by any worker of the kind (1, 2, ...):
        the first marker file this process creates exclusively."""
        if self._tries_dir is None:
            return 1
        for n in range(1, 100):
            try:
                os.close(os.open(self._tries_dir / f"{job_id}.{n}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                continue
            return n
        raise RuntimeError("a job ran 100 times")

    # ---- the upstream --------------------------------------------------------------------------

    def _accounts_state(self) -> AccountsState:
        return {"total": self.admission.total, "free": self.admission.available(), "retry_at": None}

    async def stream(self, job: Job, body: dict[str, Any]) -> AsyncIterator[Item]:
        accounts: _Accounts | None = getattr(self, "admission", None)
        if accounts is not None:
            accounts.take()
        try:
            async for item in self._stream(job, body):
                yield item
        finally:
            if accounts is not None:
                accounts.give_back()

    async def _stream(self, job: Job, body: dict[str, Any]) -> AsyncIterator[Item]:
        try_no = self._claim_try(job["job_id"])
        web = self.kind == "chatgpt_web"
        bing = self.kind in ("sydney", "bing_image")
        if bing:
            image = body.get("image")
            spec = prompt_directives(str(body.get("prompt") or (image.get("text") if isinstance(image, dict) else "")))
            if "fail_tries" in spec and try_no > int(spec["fail_tries"]):
                spec.pop("fail")
        else:
            spec = spec_for((body.get("json") or {}) if web else body, try_no)
        self.running += 1
        self._record("started", job, try_no)
        try:
            if web:
                produced = self._web_call(spec, job, body)
            elif bing:
                produced = self._bing_call(spec, job, body)
            else:
                produced = self._produce(spec, job.get("account"))
            async for item in produced:
                yield item
        except asyncio.CancelledError:
            self._record("cancelled", job, try_no)
            raise
        except SwitchyardError as err:
            self._record("failed", job, try_no, code=err.code)
            raise
        else:
            self._record("finished", job, try_no)
        finally:
            self.running -= 1

    async def _produce(self, spec: dict[str, Any], account: str | None) -> AsyncIterator[Item]:
        unary = self.kind not in STREAMING
        count = 1 if unary else int(spec.get("outputs", 3))
        if "meta" in spec:
            yield Meta(spec["meta"].get("model"), spec["meta"].get("headers"))
        if unary:
            yield WholeAnswer()
        await asyncio.sleep(float(spec.get("delay_first", 0)))
        for i in range(count + 1):
            if spec.get("hang_after") == i:
                await asyncio.Event().wait()  # until the runtime cancels us
            if "fail" in spec and int(spec.get("fail_after", 0)) == i:
                raise failure(spec)
            if i == count:
                break
            if i:
                await asyncio.sleep(float(spec.get("gap", 0)))
            yield self._output(i)
        yield StreamEnd(usage={"prompt_tokens": 1, "completion_tokens": 0 if unary else count,
                               "total_tokens": 1 if unary else 1 + count},
                        account=account)  # the account it ran on: the one the job names

    async def _web_call(self, spec: dict[str, Any], job: Job, body: dict[str, Any]) -> AsyncIterator[Item]:
        """One ChatGPT backend-api call, as a chatgpt-web-worker answers it."""
        method, path = body.get("method"), str(body.get("path"))
        if method != "POST" or path != "/conversation":
            yield WholeAnswer()
            if method == "GET" and path.startswith("/conversation/missing-"):
                yield Result({"status": 404, "body": {"detail": f"Can't load conversation {path.rsplit('/', 1)[1]}"}})
            else:
                yield Result({"status": 200, "body": {"echo": {"job": body, "access_token": "access_token" in job}}})
            yield StreamEnd()
            return
        if "status" in spec:  # the upstream refused the turn before its first event
            yield Result({"status": int(spec["status"]), "body": {"detail": "Too many requests in 1 hour."}})
            yield StreamEnd()
            return
        count = int(spec.get("outputs", 3))
        for i in range(count + 1):
            if spec.get("hang_after") == i:
                await asyncio.Event().wait()  # until the runtime cancels us
            if "fail" in spec and int(spec.get("fail_after", 0)) == i:
                raise failure(spec)
            if i == count:
                break
            if i:
                await asyncio.sleep(float(spec.get("gap", 0)))
            yield Event(web_event(i, last=i == count - 1))
        yield StreamEnd()

    async def _bing_call(self, spec: dict[str, Any], job: Job, body: dict[str, Any]) -> AsyncIterator[Item]:
        """A call of a sydney-worker or of image-worker's Bing backend, by the job's kind and op."""
        cookies = "cookies" in job
        outputs: list[Item]
        if job["kind"] == "sydney" and body.get("op") == "chat":
            events = sydney_events(str(body.get("prompt")), int(spec.get("outputs", 3)),
                                   {"cookies": cookies, "body": body})
            outputs = [Event(event) for event in events]
        elif job["kind"] == "chat":
            said = f"cookies={'yes' if cookies else 'no'} "
            outputs = [[{"index": 0, "delta": {"role": "assistant", "content": said}, "finish_reason": None}],
                       *([{"index": 0, "delta": {"content": word(i)}, "finish_reason": None}]
                         for i in range(int(spec.get("outputs", 3))))]
        else:
            yield WholeAnswer()
            if job["kind"] == "sydney":  # op upload
                digest = hashlib.sha256(base64.b64decode(str(body.get("image")))).hexdigest()
                outputs = [Result({"url": BLOB_URL + digest})]
            elif job["kind"] == "bing_image":
                outputs = [Result(bing_image_result(body.get("image") or {}))]
            else:  # an OpenAI images request
                outputs = [Result({"created": _CREATED, "data": [
                    {"url": bing_image_result({"text": body.get("prompt")})["image_urls"][0],
                     "revised_prompt": f"cookies={'yes' if cookies else 'no'}"}]})]
        for i in range(len(outputs) + 1):
            if spec.get("hang_after") == i:
                await asyncio.Event().wait()  # until the runtime cancels us
            if "fail" in spec and int(spec.get("fail_after", 0)) == i:
                raise failure(spec)
            if i == len(outputs):
                break
            if i:
                await asyncio.sleep(float(spec.get("gap", 0)))
            yield outputs[i]
        yield StreamEnd()

    def _output(self, i: int) -> Item:
        if self.kind == "chat":
            delta: dict[str, Any] = {"content": word(i)}
            if i == 0:
                delta["role"] = "assistant"
            return [{"index": 0, "delta": delta, "finish_reason": None}]
        if self.kind == "native":
            return Event({"type": "text", "seq": i, "text": word(i)})
        return Result(self._result_body())

    def _result_body(self) -> dict[str, Any]:
        model = model_of(self.kind)
        if self.kind == "embedding":
            return {"object": "list", "model": model,
                    "data": [{"object": "embedding", "index": 0, "embedding": [0.25, -0.5, 1.0]}],
                    "usage": {"prompt_tokens": 1, "total_tokens": 1}}
        if self.kind == "image":
            return {"created": _CREATED, "data": [{"b64_json": TINY_PNG}]}
        return {"id": "modr-fake", "model": model,
                "results": [{"flagged": False, "categories": {"violence": False},
                             "category_scores": {"violence": 0.01}}]}

    async def aclose(self) -> None:
        if self._events_fd is not None:
            os.close(self._events_fd)
            self._events_fd = None
