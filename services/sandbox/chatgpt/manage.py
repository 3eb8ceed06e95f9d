"""The conversation management endpoints (fact sheet §3.1, §3.3-3.7, §1.5), each a JSON answer."""

from __future__ import annotations

import json
import secrets
from typing import Any

from ..asgi import Scope, Send
from . import auth
from .conversation import title_of
from .http import detail, ok, query
from .observe import Record
from .state import FakeState

DEFAULT_LIMIT = 20
MAX_LIMIT = 100
RATINGS = frozenset({"thumbsUp", "thumbsDown"})
MAX_TOKENS = {"text-davinci-002-render-sha": 8191, "auto": 8191, "gpt-4o": 32767, "gpt-4o-mini": 32767,
              "o1": 32767}


def _cannot_load(conversation_id: str) -> str:
    return f"Can't load conversation {conversation_id}"


def _int(params: dict[str, str], key: str, default: int) -> int:
    raw = params.get(key)
    if raw is None:
        return default
    if not raw.isdigit():
        raise ValueError(f"{key} must be a whole number >= 0")
    return int(raw)


async def list_conversations(state: FakeState, user: str, scope: Scope, send: Send, record: Record) -> None:
    params = query(scope)
    try:
        offset = _int(params, "offset", 0)
        limit = min(_int(params, "limit", DEFAULT_LIMIT), MAX_LIMIT)
    except ValueError as exc:
        await detail(send, record, 400, str(exc))
        return
    order = params.get("order", "updated")
    if order not in ("updated", "created"):
        await detail(send, record, 400, "order must be updated or created")
        return
    archived = params.get("is_archived", "false") == "true"  # archived ones are listed only on request
    items, total = state.store.page(user, offset, limit, order, archived)
    await ok(send, record, {"items": [c.list_item() for c in items], "total": total, "limit": limit,
                            "offset": offset, "has_missing_conversations": False})


async def get_conversation(state: FakeState, user: str, cid: str, send: Send, record: Record) -> None:
    conversation = state.store.get(user, cid)
    if conversation is None:
        await detail(send, record, 404, _cannot_load(cid))
    else:
        await ok(send, record, conversation.json())


async def patch_conversation(state: FakeState, user: str, cid: str, body: Any, send: Send, record: Record) -> None:
    conversation = state.store.get_any(user, cid)
    if conversation is None:
        await detail(send, record, 404, _cannot_load(cid))
        return
    if not isinstance(body, dict) or not body.keys() & {"title", "is_visible", "is_archived"}:
        await detail(send, record, 400, "Expected a JSON object with title, is_visible or is_archived")
        return
    title = body.get("title")
    if "title" in body and (not isinstance(title, str) or not title):
        await detail(send, record, 400, "title must be a non-empty string")
        return
    for key in ("is_visible", "is_archived"):
        if key in body and not isinstance(body[key], bool):
            await detail(send, record, 400, f"{key} must be a boolean")
            return
    if conversation.visible:  # a hidden conversation stays hidden whatever is sent (success all the same)
        if isinstance(title, str):
            conversation.title = title
        if body.get("is_archived") is not None:
            conversation.archived = bool(body["is_archived"])
        if body.get("is_visible") is False:
            conversation.visible = False
    await ok(send, record, {"success": True})


async def patch_conversations(state: FakeState, user: str, body: Any, send: Send, record: Record) -> None:
    if not isinstance(body, dict) or body.get("is_visible") is not False:
        await detail(send, record, 400, 'Expected {"is_visible": false}')
        return
    state.store.hide_all(user)
    await ok(send, record, {"success": True})


async def gen_title(state: FakeState, user: str, cid: str, body: Any, send: Send, record: Record) -> None:
    conversation = state.store.get(user, cid)
    if conversation is None:
        await detail(send, record, 404, _cannot_load(cid))
        return
    message_id = body.get("message_id") if isinstance(body, dict) else None
    if not isinstance(message_id, str) or message_id not in conversation.mapping:
        await detail(send, record, 400, "message_id must be the id of a message of this conversation")
        return
    conversation.title = title_of(conversation.first_user_text())
    await ok(send, record, {"title": conversation.title})


async def message_feedback(state: FakeState, user: str, body: Any, send: Send, record: Record) -> None:
    if not isinstance(body, dict):
        await detail(send, record, 400, "Expected a JSON object")
        return
    cid, mid, rating = body.get("conversation_id"), body.get("message_id"), body.get("rating")
    if not isinstance(cid, str) or not isinstance(mid, str) or rating not in RATINGS:
        await detail(send, record, 400, "conversation_id, message_id and rating (thumbsUp | thumbsDown) are needed")
        return
    conversation = state.store.get(user, cid)
    if conversation is None:
        await detail(send, record, 404, _cannot_load(cid))
        return
    if mid not in conversation.mapping:
        await detail(send, record, 400, f"message {mid} is not a message of conversation {cid}")
        return
    text, tags = body.get("text"), body.get("tags")
    if (text is not None and not isinstance(text, str)) or (
        tags is not None and not (isinstance(tags, list) and all(isinstance(t, str) for t in tags))
    ):
        await detail(send, record, 400, "text must be a string and tags a list of strings")
        return
    content = state.feedback.setdefault((user, cid, mid), {})
    if text is not None:
        content["text"] = text
    if tags is not None:
        content["tags"] = tags
    # `content` is a JSON string, spaced as Python's json writes it (§3.6)
    await ok(send, record, {"message_id": mid, "conversation_id": cid, "user_id": auth.user_id(user),
                            "rating": rating, "content": json.dumps(content)})


def _model(slug: str) -> dict[str, Any]:
    return {"slug": slug, "max_tokens": MAX_TOKENS.get(slug, 8191), "title": slug,
            "description": f"Sandbox model {slug}.", "tags": [], "capabilities": {}, "product_features": {},
            "enabled_tools": []}


async def models(state: FakeState, user: str, send: Send, record: Record) -> None:
    slugs = state.models_of(user)
    categories = [{"category": slug, "human_category_name": slug, "subscription_level": "free",
                   "default_model": slug, "browsing_model": None, "code_interpreter_model": None,
                   "plugins_model": None} for slug in slugs]
    await ok(send, record, {"models": [_model(slug) for slug in slugs], "categories": categories})


async def chat_requirements(send: Send, record: Record) -> None:
    """§1.5 made optional: nothing is required, and /conversation never checks the token."""
    await ok(send, record, {
        "persona": "chatgpt-freeaccount",
        "token": "gAAAAAB" + secrets.token_urlsafe(48),
        "proofofwork": {"required": False},
        "turnstile": {"required": False},
        "arkose": {"required": False},
    })
