"""Validation of go-chatgpt-api's request bodies (seed 003), with the edge's OpenAI-style errors.

The same rule as services/edge/validation.py, from its rule factories: what the gateway or the
worker acts on is checked strictly (a conversation turn's `action`, `messages`, `parent_message_id`,
`conversation_id`, `model`; a rename's fields; a feedback's `rating`; a login's credentials), the
rest of a known field by JSON type only, and unknown fields are forwarded as they are (the web app
adds fields often: `conversation_mode`, `websocket_request_id`, ...). An explicit null is an
absent field, except `conversation_id`, where null says "a new conversation" and is forwarded.

Each body is one field table plus its cross-field constraints (`CHATGPT_BODIES`), and each
constraint carries the JSON Schema keywords that say it, so the OpenAPI document is generated from
what the edge checks, as it is for the OpenAI routes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from libs.errors import InvalidRequest
from services.edge.validation import (
    Required,
    Rule,
    Schema,
    Table,
    array,
    boolean,
    choice,
    described,
    integer,
    obj,
    schema_of,
    string,
    table_schema,
)

Body = dict[str, Any]
Constraint = Callable[[Mapping[str, Any]], None]

# a conversation or message id in a path: UUID-ish, so nothing else travels into the upstream's URL
ID_PATTERN = re.compile(r"[A-Za-z0-9-]{1,64}")
MAX_LIMIT = 100  # go-chatgpt-api's most conversations per page


def check_id(value: str, name: str) -> str:
    if ID_PATTERN.fullmatch(value) is None:
        raise InvalidRequest(
            f"'{name}' must be 1 to 64 letters, digits or '-' (a conversation id), got {value[:64]!r}.",
            param=name, code="invalid_value",
        )
    return value


def query_integer(query: Mapping[str, str], name: str, default: int, lo: int, hi: int | None) -> int:
    """A query parameter that must be a plain decimal integer within [lo, hi]."""
    raw = query.get(name)
    if raw is None:
        return default
    bound = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
    if not re.fullmatch(r"[0-9]{1,9}", raw) or int(raw) < lo or (hi is not None and int(raw) > hi):
        raise InvalidRequest(f"'{name}' must be an integer {bound}, got {raw[:32]!r}.", param=name,
                             code="invalid_value")
    return int(raw)


# ---- a conversation turn (POST /conversation) --------------------------------------------------

_STRING = string()
_ID = string(non_empty=True)
_ACTIONS = ("next", "variant", "continue")
_MESSAGE_FIELDS = obj({
    "id": Required(_ID),
    "author": obj({"role": Required(_STRING)}),
    "role": _STRING,  # the legacy duplicate of author.role; the Dec 2022 agents sent only this
    "content": Required(obj({"content_type": Required(_STRING), "parts": Required(array())})),
    "metadata": obj(),
})


def _message(value: Any, path: str) -> None:
    _MESSAGE_FIELDS(value, path)
    if value.get("author") is None and value.get("role") is None:
        raise InvalidRequest(f"Missing required parameter: '{path}.author.role' (or '{path}.role').",
                             param=f"{path}.author.role", code="missing_required_parameter")


def _message_schema() -> Schema:
    """The message's fields, in two whole forms: with `author`, or with the legacy `role` (or both)."""
    fields = schema_of(_MESSAGE_FIELDS)
    return {"anyOf": [{**fields, "required": [*fields["required"], role]} for role in ("author", "role")]}


_MESSAGE = described(_message, _message_schema())


def _conversation_id(value: Any, path: str) -> None:
    _ID(value, path)


# null is meaningful here (a new conversation), so the schema says so; the table skips a null
_CONVERSATION_ID = described(_conversation_id, {"type": ["string", "null"], "minLength": 1})

CONVERSATION_FIELDS: Table = {
    "action": Required(choice(*_ACTIONS)),
    "messages": array(_MESSAGE, non_empty=True),
    "parent_message_id": Required(_ID),
    "conversation_id": _CONVERSATION_ID,
    "model": string(non_empty=True),  # routes the job when given (else any chatgpt-web-worker)
    "timezone_offset_min": integer(),
    "history_and_training_disabled": boolean(),
    "auto_continue": boolean(),
}


def _messages_for_new_turns(body: Mapping[str, Any]) -> None:
    """`next` and `variant` send the user turn; only `continue` goes without one."""
    if body.get("action") in ("next", "variant") and body.get("messages") is None:
        raise InvalidRequest(f"Missing required parameter: 'messages' (action '{body['action']}' needs it).",
                             param="messages", code="missing_required_parameter")


_CONSTRAINT_SCHEMAS: dict[Constraint, Schema] = {
    _messages_for_new_turns: {"if": {"properties": {"action": {"enum": ["next", "variant"]}}, "required": ["action"]},
                              "then": {"required": ["messages"]}},
}

# ---- the management calls ----------------------------------------------------------------------

GEN_TITLE_FIELDS: Table = {"message_id": Required(_ID), "model": _STRING}

_BOOL = boolean()
RENAME_FIELDS: Table = {"title": _STRING, "is_visible": _BOOL, "is_archived": _BOOL}


def _one_change(body: Mapping[str, Any]) -> None:
    if all(body.get(name) is None for name in RENAME_FIELDS):
        raise InvalidRequest("Give at least one of 'title', 'is_visible' or 'is_archived'.", param="title",
                             code="missing_required_parameter")


_CONSTRAINT_SCHEMAS[_one_change] = {"anyOf": [{"required": [name]} for name in RENAME_FIELDS]}

HIDE_ALL_FIELDS: Table = {"is_visible": Required(_BOOL)}

FEEDBACK_FIELDS: Table = {
    "conversation_id": Required(_ID),
    "message_id": Required(_ID),
    "rating": Required(choice("thumbsUp", "thumbsDown")),
    "text": _STRING,
    "tags": array(_STRING),
}

LOGIN_FIELDS: Table = {"username": Required(_ID), "password": Required(_ID)}

# body name (an OpenAPI component) -> its table and cross-field constraints
CHATGPT_BODIES: dict[str, tuple[Table, tuple[Constraint, ...]]] = {
    "ChatGPTConversationRequest": (CONVERSATION_FIELDS, (_messages_for_new_turns,)),
    "ChatGPTGenTitleRequest": (GEN_TITLE_FIELDS, ()),
    "ChatGPTUpdateConversationRequest": (RENAME_FIELDS, (_one_change,)),
    "ChatGPTHideConversationsRequest": (HIDE_ALL_FIELDS, ()),
    "ChatGPTFeedbackRequest": (FEEDBACK_FIELDS, ()),
    "ChatGPTLoginRequest": (LOGIN_FIELDS, ()),
}
_RULES: dict[str, Rule] = {name: obj(table) for name, (table, _) in CHATGPT_BODIES.items()}


def validate_chatgpt_body(name: str, body: Body) -> None:
    """Raise `InvalidRequest` naming the first field at fault in a body of `name` (CHATGPT_BODIES)."""
    _RULES[name](body, "")
    for constraint in CHATGPT_BODIES[name][1]:
        constraint(body)


def chatgpt_body_schema(name: str) -> Schema:
    """The JSON Schema of a body of `name`, from the table and constraints the edge checks it with."""
    table, constraints = CHATGPT_BODIES[name]
    schema = table_schema(table)
    for constraint in constraints:
        schema.update(_CONSTRAINT_SCHEMAS[constraint])
    return schema
