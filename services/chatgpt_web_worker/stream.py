"""The event stream of `POST /backend-api/conversation`, parsed without I/O.

Feed the response body's bytes as they arrive; get typed events back. The format (fact sheet
`chatgpt-web.md` §2.4-2.5) is SSE-like but is read line by line, as every client of it does: each
`data: <json>` line is one event, whatever blank lines (or none) separate them. Tolerated, as the
clients do: `\\r\\n` endings, blank lines, `event:` lines, keep-alive pings (`data: 20…`, a bare
timestamp), lines that are not JSON. The literal `internal server error` line is a failure.

`message.content.parts[0]` is cumulative: every event repeats the whole text so far. Deltas are
taken by prefix, per assistant `message.id`, for visible text only (`recipient` all): a text that
does not extend the previous one (the server rewrote it) emits nothing and becomes the new
reference, so the client never sees a duplicated or reordered piece.

Every JSON object is also handed on as it came (`Native`, always before the events derived from
it), for the native route that relays the upstream's events one for one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class Native:
    data: dict[str, Any]  # one upstream event, as received


@dataclass(frozen=True, slots=True)
class Text:
    message_id: str
    conversation_id: str | None
    delta: str  # never empty
    model_slug: str | None


@dataclass(frozen=True, slots=True)
class Finished:
    """The assistant message's final event (at most one per message id)."""

    message_id: str
    conversation_id: str | None
    finish_type: str | None  # metadata.finish_details.type: "stop", "max_tokens" (send `continue`), "interrupted"
    model_slug: str | None


@dataclass(frozen=True, slots=True)
class Title:
    conversation_id: str | None
    title: str


@dataclass(frozen=True, slots=True)
class Moderation:
    conversation_id: str | None
    message_id: str | None
    flagged: bool
    blocked: bool


@dataclass(frozen=True, slots=True)
class StreamError:
    message: str  # unscrubbed upstream text: pass it through upstream_errors.stream_failure


@dataclass(frozen=True, slots=True)
class Done:
    pass


StreamEvent = Native | Text | Finished | Title | Moderation | StreamError | Done

_SERVER_ERROR = b"internal server error"


class ConversationStream:
    """One conversation response. `feed` the body's chunks, then `close` at its end; after `Done`
    everything else is ignored."""

    __slots__ = ("_done", "_finished", "_pending", "_texts", "conversation_id")

    def __init__(self) -> None:
        self._pending: list[bytes] = []  # the pieces of a line not yet ended
        self._done = False
        self.conversation_id: str | None = None  # learned from the first event that carries one
        self._texts: dict[str, str] = {}  # assistant message id → its text so far
        self._finished: set[str] = set()

    @property
    def done(self) -> bool:
        """Whether `data: [DONE]` was seen (a stream closed without it was cut short)."""
        return self._done

    def feed(self, chunk: bytes) -> list[StreamEvent]:
        if self._done:
            return []
        if b"\n" not in chunk and b"\r" not in chunk:
            # Most of a long event (the cumulative text grows with the answer) arrives without its
            # line end: kept in pieces, joined once, not copied again on every chunk.
            self._pending.append(chunk)
            return []
        # Lines are split on bytes, never decoded before a line is whole: a UTF-8 character cut
        # across chunks is joined first.
        buffer = b"".join(self._pending) + chunk if self._pending else chunk
        if b"\r" in buffer:
            # `\r\n` endings, or a bare `\r` (SSE allows it; JSON never holds a raw one). A `\r\n`
            # cut between chunks becomes two line ends: the blank line between them is skipped.
            buffer = buffer.replace(b"\r", b"\n")
        lines = buffer.split(b"\n")
        rest = lines.pop()
        self._pending = [rest] if rest else []
        events: list[StreamEvent] = []
        for line in lines:
            self._line(line, events)
            if self._done:
                break
        return events

    def close(self) -> list[StreamEvent]:
        """The body ended: a last line without its newline is still read."""
        events: list[StreamEvent] = []
        if self._pending and not self._done:
            self._line(b"".join(self._pending), events)
        self._pending = []
        return events

    def _line(self, line: bytes, events: list[StreamEvent]) -> None:
        line = line.strip()
        if not line.startswith(b"data:"):
            if line.lower() == _SERVER_ERROR:
                events.append(StreamError("internal server error"))
            return  # blank lines, `event: ping`, comments, anything else
        data = line[5:].lstrip()
        if not data.startswith(b"{"):
            if data == b"[DONE]":
                self._done = True
                events.append(Done())
            elif data.lower() == _SERVER_ERROR:
                events.append(StreamError("internal server error"))
            return  # ping timestamps (`data: 2023-…`) and other non-objects
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if isinstance(event, dict):
            self._event(event, events)

    def _event(self, event: dict[str, Any], events: list[StreamEvent]) -> None:
        events.append(Native(event))
        conversation_id = event.get("conversation_id")
        if not isinstance(conversation_id, str):
            conversation_id = self.conversation_id
        elif self.conversation_id is None:
            self.conversation_id = conversation_id
        error = event.get("error")
        if error:
            events.append(StreamError(_error_text(error)))
            return
        message = event.get("message")
        if isinstance(message, dict):
            self._message(message, conversation_id, events)
            return
        kind = event.get("type")
        if kind == "title_generation" and isinstance(event.get("title"), str):
            events.append(Title(conversation_id, event["title"]))
        elif kind == "moderation" or isinstance(event.get("moderation_response"), dict):
            verdict = event.get("moderation_response")
            verdict = verdict if isinstance(verdict, dict) else {}
            message_id = event.get("message_id")
            events.append(Moderation(conversation_id, message_id if isinstance(message_id, str) else None,
                                     verdict.get("flagged") is True, verdict.get("blocked") is True))
        # other `type` events (message_stream_complete, conversation_detail_metadata, …): Native only

    def _message(self, message: dict[str, Any], conversation_id: str | None, events: list[StreamEvent]) -> None:
        author = message.get("author")
        message_id = message.get("id")
        if (not isinstance(author, dict) or author.get("role") != "assistant" or not isinstance(message_id, str)
                or message.get("recipient", "all") != "all"):
            return  # echoed system/user messages, tool calls and tool output
        metadata = message.get("metadata")
        metadata = metadata if isinstance(metadata, dict) else {}
        slug = metadata.get("model_slug")
        slug = slug if isinstance(slug, str) else None
        text = _text_of(message.get("content"))
        if text is not None:
            previous = self._texts.get(message_id, "")
            self._texts[message_id] = text
            if len(text) > len(previous) and text.startswith(previous):
                events.append(Text(message_id, conversation_id, text[len(previous):], slug))
        details = metadata.get("finish_details")
        if message_id not in self._finished and (
            message.get("end_turn") is True
            or (message.get("status") == "finished_successfully" and isinstance(details, dict))
        ):
            self._finished.add(message_id)
            kind = details.get("type") if isinstance(details, dict) else None
            events.append(Finished(message_id, conversation_id, kind if isinstance(kind, str) else None, slug))


def _text_of(content: object) -> str | None:
    """The cumulative visible text of a message's content, None when it holds none."""
    if not isinstance(content, dict) or content.get("content_type", "text") != "text":
        return None
    parts = content.get("parts")
    if not isinstance(parts, list) or not parts or not isinstance(parts[0], str):
        return None
    return parts[0]


def _error_text(error: object) -> str:
    if isinstance(error, str):
        return error
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return error["message"]
    return orjson.dumps(error).decode()
