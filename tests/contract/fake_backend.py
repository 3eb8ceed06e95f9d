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
import os
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
WEB_KINDS = ("chatgpt_web",)  # run by the edge's own tests (tests/integration/test_edge_chatgpt_routes.py)
STREAMING = frozenset({"chat", "native"})
# the job kind each fake kind serves: `native` has no kind of its own yet (a web chat's own events)
JOB_KIND: dict[str, Kind] = {"chat": "chat", "embedding": "embedding", "image": "image",
                             "moderation": "moderation", "native": "chat", "chatgpt_web": "chatgpt_web"}


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
        self.features: list[Feature] = ["chat"] if JOB_KIND[kind] == "chat" else []
        self._serves: dict[str, list[Kind]] = {model or model_of(kind): [JOB_KIND[kind]]}
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
        spec = spec_for((body.get("json") or {}) if web else body, try_no)
        self.running += 1
        self._record("started", job, try_no)
        try:
            produced = self._web_call(spec, job, body) if web else self._produce(spec, job.get("account"))
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
