"""The request path every /v1 POST route shares (auth, echo_key, mark, injected statuses), and the whole
path of the one-shot JSON routes (/v1/embeddings, /v1/images/generations, /v1/moderations):
read and validate the body, read directives from its text, then `latency_ms`, `hang`, `status` /
`fail_times`, and one JSON answer. Streams and token pacing stay in completions.py."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import orjson

from . import directives, payloads
from .asgi import ClientGone, Receive, Scope, Send, header, read_body, respond
from .directives import DirectiveError, Directives
from .events import Event
from .parse import BadRequest
from .state import State
from .watch import ClientWatch

# Directives that make a one-shot request sleep somewhere, so it needs a disconnect watcher.
_TIMED = frozenset(("latency_ms", "hang"))


class Parsed(Protocol):
    @property
    def model(self) -> str: ...

    @property
    def directive_text(self) -> str: ...  # where the request's `[sandbox ...]` directives are read


P = TypeVar("P", bound=Parsed)


def bearer(auth: bytes | None) -> str | None:
    if auth is None:
        return None
    text = auth.decode("latin-1")
    return text[7:] if text[:7].lower() == "bearer " else text


async def send_error(send: Send, status: int, body: bytes, retry_after: int | None, event: Event | None) -> None:
    extra = () if retry_after is None else ((b"retry-after", b"%d" % retry_after),)
    if event is not None:
        event["status"] = status
        event["first_byte_at"] = time.time()
    await respond(send, status, body, extra=extra)
    if event is not None:
        event["completed_at"] = time.time()
        event["outcome"] = "completed"


async def send_refusal(send: Send, problem: BadRequest, event: Event | None) -> None:
    body = payloads.error_body(problem.message, "invalid_request_error", problem.code, problem.param)
    await send_error(send, problem.status, body, None, event)


async def injected_failure(state: State, send: Send, d: Directives, echoed: str | None, event: Event | None) -> bool:
    """`status=` (or the first K of `fail_times=K`): answer with that error; True when it did."""
    status = d.get("status")
    fail_times = d.get("fail_times")
    if fail_times is not None:  # the first K requests with this mark fail, later ones pass
        status = (status or 500) if state.fails.hit(str(d.get("mark", ""))) <= int(fail_times) else None
    if not status:
        return False
    status = int(status)
    retry_after = d.get("retry_after")
    if retry_after is None and status == 429:
        retry_after = 1
    body = payloads.status_error(status, echoed)
    await send_error(send, status, body, None if retry_after is None else int(retry_after), event)
    return True


async def watched(
    receive: Receive, d: Directives, event: Event | None, timed: frozenset[str],
    run: Callable[[ClientWatch | None], Awaitable[None]],
) -> None:
    """Answer through `run`, watching the client when that matters (a `mark` event, or a directive in
    `timed` that makes the answer wait): a client that leaves ends the answer quietly."""
    watch = ClientWatch(receive, event) if event is not None or (d and not timed.isdisjoint(d)) else None
    try:
        await run(watch)
    except asyncio.CancelledError:
        if watch is None or not watch.interrupted():
            raise  # not the client leaving: server shutdown
    finally:
        if watch is not None:
            watch.close()


async def delayed_or_failed(
    state: State, send: Send, d: Directives, watch: ClientWatch | None, echoed: str | None, event: Event | None,
) -> bool:
    """The directives that act before any answer: `latency_ms`, `hang` (until the client leaves),
    then an injected failure (True: its error was sent, nothing more is)."""
    latency = d.get("latency_ms", 0)
    if latency and watch is not None:
        await watch.sleep(int(latency) / 1000)
    if d.get("hang") and watch is not None:
        await watch.until_gone()
    return await injected_failure(state, send, d, echoed, event)


async def respond_ok(send: Send, body: bytes, watch: ClientWatch | None, event: Event | None) -> None:
    """A whole 200 answer, noted in the request's `mark` event."""
    if event is not None:
        event["status"] = 200
        event["first_byte_at"] = time.time()
    await respond(send, 200, body)
    if watch is not None:
        watch.finished = True  # before any await: completing the response also wakes the watcher
    if event is not None and not event["disconnected_at"]:
        event["completed_at"] = time.time()
        event["outcome"] = "completed"


async def admit(
    state: State, scope: Scope, send: Send, raw: bytes, received_at: float, parse: Callable[[Any], P],
    streamed: Callable[[P], bool],
) -> tuple[P | None, Directives, Event | None, str | None]:
    """A request's body read as `parse` says, with its directives (over the sandbox's defaults), its
    `mark` event and the key to echo. A request refused here (a bad key first, like the real API,
    then a bad body) has had its answer sent: its job is None."""
    auth = header(scope, b"authorization")
    job: P | None = None
    found: Directives = {}
    problem: BadRequest | None = None
    try:
        job = parse(orjson.loads(raw))
        found = directives.parse(job.directive_text)
    except orjson.JSONDecodeError:
        problem = BadRequest("We could not parse the JSON body of your request.")
    except BadRequest as exc:
        problem = exc
    except DirectiveError as exc:
        problem = BadRequest(str(exc))
    d = state.defaults | found if state.defaults else found

    mark = d.get("mark")
    event = None
    if mark is not None and job is not None:
        event = state.events.open(
            mark=str(mark),
            path=scope["path"],
            model=job.model,
            stream=streamed(job),
            authorization_present=auth is not None,
            received_at=received_at,
        )
    echoed = (bearer(auth) or "(none)") if d.get("echo_key") else None

    if not state.authorized(auth):  # auth first, like the real API
        await send_error(send, 401, payloads.status_error(401, echoed), None, event)
        return None, d, event, echoed
    if problem is not None or job is None:
        await send_refusal(send, problem or BadRequest("invalid request"), event)
        return None, d, event, echoed
    return job, d, event, echoed


async def serve(
    state: State,
    scope: Scope,
    receive: Receive,
    send: Send,
    parse: Callable[[Any], P],
    answer: Callable[[P, Directives], bytes],
) -> None:
    """One request of a one-shot route: `parse` validates the decoded body (raising BadRequest),
    `answer` builds the 200 body once every injected fault has been passed."""
    received_at = time.time()
    try:
        raw = await read_body(receive)
    except ClientGone:
        return
    job, d, event, echoed = await admit(state, scope, send, raw, received_at, parse, lambda job: False)
    if job is None:
        return

    async def run(watch: ClientWatch | None) -> None:
        if await delayed_or_failed(state, send, d, watch, echoed, event):
            return
        try:
            body = answer(job, d)
        except BadRequest as exc:  # found while answering (e.g. a directive that does not fit the request)
            await send_refusal(send, exc, event)
            return
        await respond_ok(send, body, watch, event)

    await watched(receive, d, event, _TIMED, run)
