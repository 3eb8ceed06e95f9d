"""The websocket protocol between ChatGPT-API-server and its browser agents (agent-protocol.md §3), sans-I/O.

Every frame in both directions is one JSON object `{"id", "message", "data"}` (§3.2): `message` names
the kind, `id` correlates a reply with what it answers, `data` is a string (for a job and its answer,
a JSON document encoded as a string). This module turns text frames into typed messages and back;
it never touches a socket, so the bridge, the tests and any other caller share one reading of the sheet.

Server → agent (what we encode): `ConnectionId`, `Ping`, `ChatGptRequest`.
Agent → server (what we parse): `ConnectionIdReply`, `Pong`, `ChatGptResponse`, `AgentError`.

Where this is deliberately stricter than the seed server (§3.2 says it only looks at `id` and `data`):
- the `message` kind decides the type; a kind the agents never send is refused, so a confused agent
  is caught at its first frame instead of being taken for whatever the server waits for;
- `id` must be a non-empty string, `message` and `data` strings (a missing `data` is `""`, as Go
  would read it); unknown keys are ignored (the Firefox agent adds `error`);
- a `ChatGptResponse` whose `data` is not a JSON object of strings is refused (the seed answers its
  HTTP caller 500 "Failed to convert response to ChatGptResponse"; a caller of this module maps the
  `ProtocolError` to that outcome itself, using `ProtocolError.frame_id` to find the job);
- binary frames and frames longer than `MAX_FRAME_CHARS` are refused (the seed had no limit).
`ProtocolError` messages never quote the frame: an agent may echo prompts or tokens back.

Encoding follows the seed's Go encoder: compact JSON, keys in the struct's order, one trailing
newline per frame (§3.1); the agents parse with JSON.parse, so Go's HTML escaping is not copied.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import orjson

__all__ = [
    "CHATGPT_REQUEST",
    "CHATGPT_RESPONSE",
    "CONNECTION_ID",
    "ERROR",
    "MAX_FRAME_CHARS",
    "PING",
    "PONG",
    "AgentError",
    "AgentMessage",
    "ChatGptRequest",
    "ChatGptResponse",
    "ConnectionId",
    "ConnectionIdReply",
    "Ping",
    "Pong",
    "ProtocolError",
    "ServerMessage",
    "encode",
    "parse_agent_frame",
    "parse_server_frame",
]

# the `message` values of §3.2, spelled and cased as the server and the agents write them
CONNECTION_ID: Final = "Connection id"
PING: Final = "ping"
PONG: Final = "pong"
CHATGPT_REQUEST: Final = "ChatGptRequest"
CHATGPT_RESPONSE: Final = "ChatGptResponse"
ERROR: Final = "error"

# A ChatGPT answer of 2022 was a few KB; 1 Mi characters leaves room for long ones while bounding
# what one agent can make the bridge parse. Callers should give their websocket a matching max_size.
MAX_FRAME_CHARS: Final = 1 << 20


class ProtocolError(ValueError):
    """A frame that does not follow the sheet. The message is secret-free (it never quotes the frame);
    `frame_id` is the envelope's `id` when it could be read, so a pending job can be failed by it."""

    def __init__(self, message: str, frame_id: str | None = None) -> None:
        super().__init__(message)
        self.frame_id = frame_id


# ---- server → agent -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConnectionId:
    """The server's first frame (§3.3 S1): the connection id it offers the agent."""

    id: str


@dataclass(frozen=True, slots=True)
class Ping:
    """Sent before a job (§3.3 S2); the agent must answer a `Pong` with the same id."""

    id: str


@dataclass(frozen=True, slots=True)
class ChatGptRequest:
    """The job (§3.3 S3). `id` is the request id the answer must carry; the four other fields travel
    double-encoded in `data`, all present, all strings; `conversation_id` is "" for a new conversation."""

    id: str
    message_id: str
    conversation_id: str
    parent_id: str
    content: str


# ---- agent → server -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConnectionIdReply:
    """The agent's first frame (§3.3 A1): the offered id, or one it stored from an earlier connection."""

    id: str


@dataclass(frozen=True, slots=True)
class Pong:
    id: str


@dataclass(frozen=True, slots=True)
class ChatGptResponse:
    """An answer (§3.3 A3). `data` decodes to these five optional string keys (`types.ChatGptResponse`);
    the stock agents send only response_id, conversation_id and content. A non-empty `error` is the
    sheet's recommended way (§8) for an agent to report a failure with a parseable answer."""

    id: str
    response_id: str = ""
    conversation_id: str = ""
    content: str = ""
    error: str = ""
    data_id: str = ""  # the `id` key inside `data` (not the envelope's id); "" with the stock agents


@dataclass(frozen=True, slots=True)
class AgentError:
    """The Firefox agent's failure frame (§3.3 A4): `data` is free text ("Unknown error", or
    "Error: <upstream detail>" in older agents). Its `error` key (a serialised JS Error) is ignored."""

    id: str
    detail: str


ServerMessage = ConnectionId | Ping | ChatGptRequest
AgentMessage = ConnectionIdReply | Pong | ChatGptResponse | AgentError


# ---- encoding -------------------------------------------------------------------------------------


def _frame(id_: str, message: str, data: str) -> str:
    return orjson.dumps({"id": id_, "message": message, "data": data}).decode() + "\n"


def encode(msg: ServerMessage | AgentMessage) -> str:
    """One text frame for `msg`. Server messages come out as the seed server writes them; agent
    messages as the Firefox agent does (useful for tests and fakes)."""
    if isinstance(msg, ConnectionId | ConnectionIdReply):
        return _frame(msg.id, CONNECTION_ID, "")
    if isinstance(msg, Ping):
        return _frame(msg.id, PING, "")
    if isinstance(msg, Pong):
        return _frame(msg.id, PONG, "")
    if isinstance(msg, ChatGptRequest):
        data = {"message_id": msg.message_id, "conversation_id": msg.conversation_id,
                "parent_id": msg.parent_id, "content": msg.content}
        return _frame(msg.id, CHATGPT_REQUEST, orjson.dumps(data).decode())
    if isinstance(msg, ChatGptResponse):
        answer = {"response_id": msg.response_id, "conversation_id": msg.conversation_id, "content": msg.content}
        if msg.error:
            answer["error"] = msg.error
        if msg.data_id:
            answer["id"] = msg.data_id
        return _frame(msg.id, CHATGPT_RESPONSE, orjson.dumps(answer).decode())
    if isinstance(msg, AgentError):
        return orjson.dumps({"id": msg.id, "message": ERROR, "data": msg.detail, "error": {}}).decode() + "\n"
    raise TypeError(f"not a protocol message: {type(msg).__name__}")


# ---- parsing --------------------------------------------------------------------------------------


def _envelope(frame: str | bytes, max_chars: int) -> tuple[str, str, str]:
    if not isinstance(frame, str):
        raise ProtocolError("binary frame: the protocol uses text frames only")
    if len(frame) > max_chars:
        raise ProtocolError(f"frame too large: {len(frame)} characters, the limit is {max_chars}")
    try:
        obj = orjson.loads(frame)
    except orjson.JSONDecodeError:
        raise ProtocolError(f"malformed JSON: a frame of {len(frame)} characters") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"a frame must be a JSON object, not a JSON {type(obj).__name__}")
    id_ = obj.get("id")
    if not isinstance(id_, str) or not id_:
        raise ProtocolError("frame field 'id' must be a non-empty string")
    kind = obj.get("message")
    if not isinstance(kind, str):
        raise ProtocolError("frame field 'message' must be a string", id_)
    data = obj.get("data", "")
    if not isinstance(data, str):
        raise ProtocolError("frame field 'data' must be a string", id_)
    return id_, kind, data


def _data_object(id_: str, kind: str, data: str) -> dict[str, Any]:
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ProtocolError(f"{kind} data is not JSON ({len(data)} characters)", id_) from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"{kind} data must be a JSON object, not a JSON {type(obj).__name__}", id_)
    return obj


def _strings(id_: str, kind: str, obj: dict[str, Any], keys: tuple[str, ...], required: bool) -> list[str]:
    out: list[str] = []
    for key in keys:
        value = obj.get(key)
        if value is None and not required:
            value = ""
        if not isinstance(value, str):
            problem = "is missing" if value is None else "must be a string"
            raise ProtocolError(f"{kind} data key {key!r} {problem}", id_)
        out.append(value)
    return out


def _response(id_: str, data: str) -> ChatGptResponse:
    obj = _data_object(id_, CHATGPT_RESPONSE, data)
    response_id, conversation_id, content, error, data_id = _strings(
        id_, CHATGPT_RESPONSE, obj, ("response_id", "conversation_id", "content", "error", "id"), required=False)
    return ChatGptResponse(id_, response_id, conversation_id, content, error, data_id)


def _request(id_: str, data: str) -> ChatGptRequest:
    obj = _data_object(id_, CHATGPT_REQUEST, data)
    message_id, conversation_id, parent_id, content = _strings(
        id_, CHATGPT_REQUEST, obj, ("message_id", "conversation_id", "parent_id", "content"), required=True)
    return ChatGptRequest(id_, message_id, conversation_id, parent_id, content)


_AGENT_KINDS: dict[str, Callable[[str, str], AgentMessage]] = {
    CONNECTION_ID: lambda id_, _data: ConnectionIdReply(id_),
    PONG: lambda id_, _data: Pong(id_),
    CHATGPT_RESPONSE: _response,
    ERROR: AgentError,
}
_SERVER_KINDS: dict[str, Callable[[str, str], ServerMessage]] = {
    CONNECTION_ID: lambda id_, _data: ConnectionId(id_),
    PING: lambda id_, _data: Ping(id_),
    CHATGPT_REQUEST: _request,
}


_PLAIN_KIND = re.compile(r"[A-Za-z ]{1,24}")


def _kind_name(kind: str) -> str:
    """A kind worth naming in an error (a short plain word), else only its length: never echo what
    might be data an agent put in the wrong field."""
    return repr(kind) if _PLAIN_KIND.fullmatch(kind) else f"<{len(kind)} characters>"


def parse_agent_frame(frame: str | bytes, *, max_chars: int = MAX_FRAME_CHARS) -> AgentMessage:
    """The typed message of one frame an agent sent. Raises ProtocolError on anything else."""
    id_, kind, data = _envelope(frame, max_chars)
    build = _AGENT_KINDS.get(kind)
    if build is None:
        raise ProtocolError(f"unknown message type from an agent: {_kind_name(kind)}", id_)
    return build(id_, data)


def parse_server_frame(frame: str | bytes, *, max_chars: int = MAX_FRAME_CHARS) -> ServerMessage:
    """The typed message of one frame the server sent (the agent's side; for tests and agents)."""
    id_, kind, data = _envelope(frame, max_chars)
    build = _SERVER_KINDS.get(kind)
    if build is None:
        raise ProtocolError(f"unknown message type from the server: {_kind_name(kind)}", id_)
    return build(id_, data)
