"""POST /v1/chat/completions and /v1/completions: validate, apply directives, answer (stream or not)."""

from __future__ import annotations

import time

from . import directives, payloads
from .asgi import SSE_HEADERS, ClientGone, Receive, Scope, Send, read_body
from .directives import Directives
from .events import Event
from .front import admit, delayed_or_failed, respond_ok, send_error, watched
from .generate import DEFAULT_TOKENS, Choice, seed_of, text_choice, tool_choice
from .parse import Job, chat_job, completion_job
from .state import State
from .watch import ClientWatch, InjectedAbort

# Any of these means the request sleeps somewhere, so it needs a disconnect watcher.
_TIMED = frozenset(("latency_ms", "first_token_ms", "token_delay_ms", "hang", "hang_after"))
# A failure mid-generation, as OpenAI reports one inside a stream (the message echoes the key with echo_key).
_MID_STREAM_ERROR = "The server had an error while processing your request (sandbox)."


def _choices(job: Job, d: Directives) -> list[Choice]:
    wanted = d.get("tokens", DEFAULT_TOKENS)
    assert isinstance(wanted, int)
    n = job.n
    if not job.chat:  # choice index = prompt_index * n + i, as OpenAI numbers them
        out: list[Choice] = []
        for p, prompt in enumerate(job.prompts):
            seed = seed_of(directives.strip(prompt))
            out.extend(text_choice(p * n + i, seed, i, wanted, job.max_tokens) for i in range(n))
        return out
    seed = seed_of(directives.strip(job.prompts[0]))
    tool = (d.get("tool") or job.tool_name) if job.has_tools else None
    if tool:
        last = directives.strip(job.directive_text)
        return [tool_choice(i, seed, str(tool), last) for i in range(n)]
    return [text_choice(i, seed, i, wanted, job.max_tokens) for i in range(n)]


async def handle(state: State, scope: Scope, receive: Receive, send: Send, chat: bool) -> None:
    received_at = time.time()
    try:
        raw = await read_body(receive)
    except ClientGone:
        return
    parse = chat_job if chat else completion_job
    job, d, event, echoed = await admit(state, scope, send, raw, received_at, parse, lambda job: job.stream)
    if job is None:
        return

    await watched(receive, d, event, _TIMED, lambda watch: _answer(state, send, job, d, watch, event, echoed))


async def _answer(
    state: State,
    send: Send,
    job: Job,
    d: Directives,
    watch: ClientWatch | None,
    event: Event | None,
    echoed: str | None,
) -> None:
    if await delayed_or_failed(state, send, d, watch, echoed, event):
        return

    choices = _choices(job, d)
    created = int(time.time())
    rid = state.next_id("chatcmpl-" if job.chat else "cmpl-")
    if not job.stream:
        # A real upstream answers a non-stream request once it has generated everything: the
        # same delays apply, and a failure or hang mid-generation means no answer at all.
        if await _generate_unstreamed(max((c.completion_tokens for c in choices), default=0), d, watch, event):
            return
        if d.get("error_after") is not None:  # the generation failed: no answer, an error status
            await send_error(send, 500, payloads.status_error(500, echoed), None, event)
            return
        build = payloads.chat_completion if job.chat else payloads.text_completion
        await respond_ok(send, build(rid, created, job.model, choices, job.prompt_tokens), watch, event)
        return

    frame = payloads.chat_frames if job.chat else payloads.text_frames
    frames = frame(rid, created, job.model, choices, job.prompt_tokens, job.include_usage)
    await _stream(send, frames, d, watch, event, echoed)


def _cut(d: Directives) -> int | None:
    """After how many tokens a fault (`fail_after`, `hang_after`, `error_after`) stops the generation."""
    cuts = [int(c) for c in (d.get("fail_after"), d.get("hang_after"), d.get("error_after")) if c is not None]
    return min(cuts) if cuts else None


async def _fault(d: Directives, cut: int, watch: ClientWatch | None, event: Event | None) -> None:
    """At the cut: abort the connection (`fail_after`), else hang until the client goes away."""
    if d.get("fail_after") is not None and int(d["fail_after"]) == cut:
        if event is not None:
            event["aborted_at"] = time.time()
            event["outcome"] = "aborted"
        raise InjectedAbort(f"fail_after={cut}")  # uvicorn closes the socket: nothing more is sent
    if watch is not None:
        await watch.until_gone()


async def _generate_unstreamed(tokens: int, d: Directives, watch: ClientWatch | None, event: Event | None) -> bool:
    """Spend the generation time of a non-stream answer; True when a fault ended it (no answer)."""
    cut = _cut(d)
    generated = tokens if cut is None else min(cut, tokens)
    if watch is not None:
        wait = int(d.get("first_token_ms", 0)) + max(0, generated - 1) * int(d.get("token_delay_ms", 0))
        if wait:
            await watch.sleep(wait / 1000)
    if cut is None or (d.get("error_after") is not None and int(d["error_after"]) == cut):
        return False  # answered (an error_after answer is an error status, sent by the caller)
    await _fault(d, cut, watch, event)
    return True


async def _stream(
    send: Send, frames: payloads.Frames, d: Directives, watch: ClientWatch | None, event: Event | None,
    echoed: str | None,
) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
    if event is not None:
        event["status"] = 200
        event["first_byte_at"] = time.time()
    first_ms = int(d.get("first_token_ms", 0))
    delay = int(d.get("token_delay_ms", 0)) / 1000
    cut = _cut(d)
    contents = frames.contents
    limit = len(contents) if cut is None else min(cut, len(contents))

    if first_ms and watch is not None:
        await watch.sleep(first_ms / 1000)
    # Without a token delay everything goes out in one write: SSE events stay one per token, only the
    # TCP writes coalesce, which keeps the sandbox far from being a benchmark's bottleneck.
    buf = list(frames.heads)
    if not delay or watch is None:
        buf.extend(contents if limit == len(contents) else contents[:limit])
    else:
        for i in range(limit):
            if i:
                await send({"type": "http.response.body", "body": b"".join(buf), "more_body": True})
                buf = []
                if event is not None:
                    event["content_chunks"] = i
                await watch.sleep(delay)
            buf.append(contents[i])

    if cut is None:
        buf.extend(frames.tails)
        await send({"type": "http.response.body", "body": b"".join(buf), "more_body": False})
        if watch is not None:
            watch.finished = True  # before any await: completing the response also wakes the watcher
        if event is not None and not event["disconnected_at"]:
            event["content_chunks"] = limit
            event["completed_at"] = time.time()
            event["outcome"] = "completed"
        return

    if event is not None:
        event["content_chunks"] = limit
    if d.get("error_after") is not None and int(d["error_after"]) == cut:
        message = _MID_STREAM_ERROR if echoed is None else f"{_MID_STREAM_ERROR} Request used API key: {echoed}."
        error = payloads.error_body(message, "server_error")
        buf.append(b"data: " + error + b"\n\n")  # then the stream ends: no final chunk, no [DONE]
        await send({"type": "http.response.body", "body": b"".join(buf), "more_body": False})
        if watch is not None:
            watch.finished = True
        if event is not None:
            event["completed_at"] = time.time()
            event["outcome"] = "error_event"
        return
    await send({"type": "http.response.body", "body": b"".join(buf), "more_body": True})
    await _fault(d, cut, watch, event)  # no final chunk, no [DONE]
