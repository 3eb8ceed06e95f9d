"""POST /backend-api/conversation: plan the turn against the user's tree, then stream it (§2, §8.1-2).

Order of checks: (the router did auth and the one-turn-at-a-time rule) body → 400, model → 404
model_not_found, an armed fault, conversation and parent → 404 / 400, directives `latency_ms`, `hang`,
`status`; only then is the tree changed and the stream started.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

import orjson

from .. import directives, generate
from ..asgi import SSE_HEADERS, ClientGone, Receive, Send, read_body
from ..directives import DirectiveError, Directives
from ..watch import ClientWatch
from . import faults, sse
from .http import answer, detail
from .observe import Record
from .state import FakeState
from .store import Conversation, Node
from .turn import BadRequest, Turn, parse

AUTO_SLUG = "gpt-4o"  # what `auto` is answered by (metadata.model_slug)
TITLE_WORDS = 4
_STOP = {"type": "stop", "stop": "<|im_end|>"}


class NotFound(Exception):
    """404 `{"detail": "Conversation not found"}`."""


@dataclass(slots=True)
class Plan:
    conversation: Conversation
    is_new: bool
    user_nodes: list[Node]  # new nodes, parent first
    echo: list[sse.Message]  # user messages streamed before the answer
    answer: Node  # the assistant node (its message starts with parts [""])
    words: tuple[str, ...]  # the pieces this message writes, separators included
    finish: str  # stop | max_tokens
    d: Directives


def title_of(text: str) -> str:
    words = directives.strip(text).split()[:TITLE_WORDS]
    return " ".join(words) if words else "New chat"


def slug_of(model: str) -> str:
    return AUTO_SLUG if model == "auto" else model


def _user_node(message_id: str, role: str, text: str, parent: str) -> Node:
    msg = sse.message(message_id, role, text, status="finished_successfully", end_turn=None, metadata={})
    return Node(message_id, msg, parent)


def _directives(text: str) -> Directives:
    try:
        return directives.parse(text)
    except DirectiveError as exc:
        raise BadRequest(str(exc)) from None


def _words(seed_text: str, choice: int, d: Directives) -> tuple[str, ...]:
    count = int(d.get("tokens", generate.DEFAULT_TOKENS))
    return tuple(w.rstrip() for w in generate.tokens(generate.seed_of(directives.strip(seed_text)), choice, count))


def plan(state: FakeState, user: str, turn: Turn) -> Plan:
    now = time.time()
    if turn.conversation_id is None:
        conversation = Conversation(str(uuid.uuid4()), title_of(turn.last_user_text()), now, now,
                                    {turn.parent_message_id: Node(turn.parent_message_id, None, None)},
                                    turn.parent_message_id)
        is_new = True
    else:
        found = state.store.get(user, turn.conversation_id)
        if found is None:
            raise NotFound
        conversation, is_new = found, False
        if turn.parent_message_id not in conversation.mapping:
            raise BadRequest(f"parent_message_id {turn.parent_message_id} is not a message of conversation "
                             f"{conversation.id}")
    mapping = conversation.mapping

    if turn.action == "continue":
        return _continuation(conversation, turn)

    user_nodes: list[Node] = []
    echo: list[sse.Message] = []
    last = turn.messages[-1]
    if turn.action == "variant" and conversation.role_of(last.id) == "user":
        anchor = mapping[last.id]  # regenerate: a sibling answer under the same user message
        assert anchor.message is not None
        echo.append(anchor.message)
        seed_text = str(anchor.message["content"]["parts"][0])
    else:
        parent = turn.parent_message_id
        for m in turn.messages:
            if m.id in mapping:
                raise BadRequest(f"message id {m.id} already exists in conversation {conversation.id}")
            node = _user_node(m.id, m.role, m.text, parent)
            user_nodes.append(node)
            assert node.message is not None
            echo.append(node.message)
            parent = m.id
        anchor = user_nodes[-1]
        seed_text = turn.last_user_text()
    # a variant takes the next word sequence, so regenerating gives a different answer
    choice = sum(1 for c in anchor.children if conversation.role_of(c) == "assistant")
    d = _directives(seed_text)
    words = _words(seed_text, choice, d)
    finish = "stop"
    cut = d.get("max_tokens_at")
    if cut is not None and int(cut) < len(words):
        words, finish = words[: int(cut)], "max_tokens"
    pieces = tuple(w if i == 0 else " " + w for i, w in enumerate(words))
    answer_node = _answer_node(anchor.id, turn, seed_text, choice)
    return Plan(conversation, is_new, user_nodes, echo, answer_node, pieces, finish, d)


def _answer_node(parent: str, turn: Turn, seed_text: str, choice: int, words_done: int = 0) -> Node:
    metadata = {"message_type": turn.action, "model_slug": slug_of(turn.model), "default_model_slug": turn.model}
    msg = sse.message(str(uuid.uuid4()), "assistant", "", status="in_progress", end_turn=None, metadata=metadata)
    return Node(msg["id"], msg, parent, seed_text=seed_text, choice=choice, words_done=words_done)


def _continuation(conversation: Conversation, turn: Turn) -> Plan:
    """`continue` on a message cut by max_tokens: a NEW assistant message, child of the cut one, whose
    parts hold only the continuation, each piece with its leading space, so cut text + continuation
    text is exactly the uncut answer."""
    cut = conversation.mapping[turn.parent_message_id]
    details = cut.message["metadata"].get("finish_details") if cut.message is not None else None
    if conversation.role_of(cut.id) != "assistant" or not details or details.get("type") != "max_tokens":
        raise BadRequest(f"message {cut.id} was not cut short (finish_details.type max_tokens): nothing to continue")
    d = _directives(cut.seed_text)
    rest = _words(cut.seed_text, cut.choice, d)[cut.words_done :]
    node = _answer_node(cut.id, turn, cut.seed_text, cut.choice, cut.words_done)
    return Plan(conversation, False, [], [], node, tuple(" " + w for w in rest), "stop", d)


def commit(state: FakeState, user: str, p: Plan) -> None:
    conversation = p.conversation
    if p.is_new:
        state.store.add(user, conversation)
    for node in p.user_nodes:
        conversation.add(node)
    conversation.add(p.answer)
    conversation.current_node = p.answer.id
    conversation.update_time = time.time()


async def post(state: FakeState, user: str, record: Record, receive: Receive, send: Send) -> None:
    try:
        raw = await read_body(receive)
    except ClientGone:
        return
    try:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise BadRequest("The request body is not valid JSON") from None
        turn = parse(body)
    except BadRequest as exc:
        await detail(send, record, 400, str(exc))
        return
    record.update(action=turn.action, conversation_id=turn.conversation_id,
                  parent_message_id=turn.parent_message_id, model=turn.model,
                  messages=[{"id": m.id, "role": m.role, "text": m.text} for m in turn.messages])
    if turn.model not in state.models_of(user):
        await detail(send, record, 404, {"message": f"Model {turn.model} is not available for this account.",
                                         "code": "model_not_found"})
        return
    fault = state.faults.take(user, "conversation", turn.model)
    if fault is not None and fault.fault != "in_stream_error":
        await answer(send, record, *faults.answer(fault.fault, fault.clears_in))
        return
    try:
        p = plan(state, user, turn)
    except NotFound:
        await answer(send, record, 404, faults.NOT_FOUND)
        return
    except BadRequest as exc:
        await detail(send, record, 400, str(exc))
        return

    watch = ClientWatch(receive, None)
    try:
        latency = int(p.d.get("latency_ms", 0))
        if latency:
            await watch.sleep(latency / 1000)
        if p.d.get("hang"):
            await watch.until_gone()
        injected = p.d.get("status")
        if injected:
            await answer(send, record, *faults.status_answer(int(injected)))
            return
        commit(state, user, p)
        error_after = 1 if fault is not None else p.d.get("error_after")
        await _stream(state, user, p, send, watch, record, None if error_after is None else int(error_after))
    except asyncio.CancelledError:
        if not watch.interrupted():
            raise  # not the client leaving: server shutdown
        record["finish"] = record["finish"] or "disconnected"
    finally:
        watch.close()
        _settle(p.answer)


def _settle(node: Node) -> None:
    """An answer that did not finish (error, hang, client gone) stays in the tree as interrupted."""
    msg = node.message
    if msg is not None and msg["status"] == "in_progress":
        msg["status"] = "finished_partial_completion"
        msg["metadata"]["finish_details"] = {"type": "interrupted"}


async def _stream(
    state: FakeState, user: str, p: Plan, send: Send, watch: ClientWatch, record: Record, error_after: int | None,
) -> None:
    cid = p.conversation.id
    node = p.answer
    msg = node.message
    assert msg is not None
    record["status"] = 200
    await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
    state.observer.turn(user)
    buf = [sse.event(m, cid, crlf=True) for m in p.echo]
    buf.append(sse.ping())
    buf.append(sse.event(msg, cid))
    buf.append(sse.NOT_JSON)  # between the answer's events, where a client parses most strictly

    async def flush() -> None:
        await send({"type": "http.response.body", "body": b"".join(buf), "more_body": True})
        buf.clear()

    hang_after = p.d.get("hang_after")
    cuts = [int(c) for c in (hang_after, error_after) if c is not None]
    limit = min([len(p.words), *cuts])
    first = int(p.d.get("first_token_ms", 0)) / 1000
    delay = int(p.d.get("token_delay_ms", 0)) / 1000
    parts = msg["content"]["parts"]
    for i in range(limit):
        pause = first if i == 0 else delay
        if pause:
            await flush()
            await watch.sleep(pause)
        parts[0] += p.words[i]
        node.words_done += 1
        buf.append(sse.event(msg, cid))
    if error_after is not None and min(error_after, len(p.words)) == limit:
        buf.append(sse.error_event(cid))  # then the stream ends: no final event, no [DONE]
        record["finish"] = "error"
        await send({"type": "http.response.body", "body": b"".join(buf), "more_body": False})
        watch.finished = True
        return
    if hang_after is not None:
        await flush()
        await watch.until_gone()

    msg["status"] = "finished_successfully"
    msg["end_turn"] = True
    msg["metadata"]["finish_details"] = _STOP if p.finish == "stop" else {"type": "max_tokens"}
    p.conversation.update_time = time.time()
    buf.append(sse.event(msg, cid))
    buf.append(sse.moderation(cid, msg["id"]))
    if p.is_new:
        buf.append(sse.title(cid, p.conversation.title))
    buf.append(sse.DONE)
    record["finish"] = p.finish
    await send({"type": "http.response.body", "body": b"".join(buf), "more_body": False})
    watch.finished = True  # before any await: completing the response also wakes the watcher
