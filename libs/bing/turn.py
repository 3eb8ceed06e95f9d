"""The reader of one chat turn, without I/O: SignalR records in, typed items out (fact sheet
sydney.md §3.4-3.7). It follows SydneyQt's `AskStream`/`AskStreamRaw`, so a worker built on it
emits the events SydneyQt's webapi emits, with the same `Text` payloads.

- `type:1` updates carry CUMULATIVE text in `arguments[0].messages[0]`. Only that first message
  is read. Untyped bot text becomes `message` deltas: `wrote` counts what was already emitted of
  the current message; a `cursor` key (the first frame of a new bot message) resets it to 0, and
  text that shrinks (Bing deleted some) moves it back without emitting. Counted in code points
  (SydneyQt counts bytes; the two agree whenever an update extends the previous text).
- Typed messages (`messageType`) become the typed events of §3.6; unknown types are ignored,
  as are frames without messages (throttling-only) and pings (type:6).
- `contentOrigin: "Apology"` ends the turn as `TurnFailed("Apology", ...)`.
- `type:2` ends the turn: `TurnEnd` on `result.value == "Success"` (after the last message's
  suggested responses), else `TurnFailed(value, message)`. `type:7` (server close) ends it as
  `TurnFailed("Closed", error)`; a `type:3` completion before any `type:2` as
  `TurnFailed("Completion", error)` (the invocation is over; waiting on would only time out).

Decisions where SydneyQt has a quirk: an empty `suggestedResponses` list emits nothing (SydneyQt
sends the text `null`); Apology says "Message revoke detected" whenever any text was emitted in the
turn (SydneyQt checks only the current message's counter, which a cursor resets); the loader's
last-resort payload is the message re-encoded compactly (SydneyQt forwards the raw bytes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus

import orjson

from libs.bing import gojson

REVOKED = "Message revoke detected"
FILTERED = "Looks like the user's message has triggered the Bing filter"
_NO_RESULTS = "Web search returned no relevant result"
_DOC_PROGRESS = frozenset(("retrieve-shortdoc-progress", "compress-longdoc-progress"))
# Go's regexp `\[(\d+)]: (.*)`, unanchored; `\d` is ASCII there, hence [0-9].
_CITATION = re.compile(r"\[([0-9]+)]: (.*)")
_GO_INT_MAX = 2**63 - 1
# The sydney partner URL of the image creator (§7.1), before `q=`.
_IMAGE_CREATE_PATH = "/images/create?partner=sydney&re=1&showselective=1&sude=1&kseed=7500&SFX=2&gptexp=unknown&q="


@dataclass(frozen=True, slots=True)
class SydneyEvent:
    type: str  # message, search_query, search_result, loading, generative_image, ... (§3.6)
    text: str  # SydneyQt's `Text`: a delta, a display string, or JSON text for JSON-valued events


@dataclass(frozen=True, slots=True)
class TurnEnd:
    suggested: list[str]  # the final message's suggested responses ([] when none)
    throttling: dict[str, Any] | None  # item.throttling: {maxNumUserMessagesInConversation, num...}


@dataclass(frozen=True, slots=True)
class TurnFailed:
    value: str  # result.value as sent (Throttled, CaptchaChallenge, ...), "Apology", "Closed", "Completion"
    message: str  # the upstream's text, or SydneyQt's for Apology


TurnItem = SydneyEvent | TurnEnd | TurnFailed


def _s(value: Any) -> str:
    """gjson's `.String()`: strings as they are, null/missing as "", anything else as its JSON."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return orjson.dumps(value).decode()


def _path(value: Any, *steps: str | int) -> Any:
    for step in steps:
        if isinstance(step, int):
            if not isinstance(value, list) or len(value) <= step:
                return None
        elif not isinstance(value, dict):
            return None
        value = value[step] if isinstance(step, int) else value.get(step)
    return value


def _array(value: Any) -> list[Any]:
    """gjson's `.Array()`: an array's elements, [] for null, else the value alone."""
    if isinstance(value, list):
        return value
    return [] if value is None else [value]


def _atoi(digits: str) -> int:
    digits = digits.lstrip("0") or "0"
    return _GO_INT_MAX if len(digits) > 19 else min(int(digits), _GO_INT_MAX)


class TurnReader:
    """Feed each record of one turn in order; collect the items. `done` once the turn has ended."""

    __slots__ = ("_done", "_image_prefix", "_last_doc_loading", "_sent_text", "_sources", "_wrote")

    def __init__(self, bing_base_url: str) -> None:
        self._image_prefix = bing_base_url.rstrip("/") + _IMAGE_CREATE_PATH
        self._wrote = 0  # code points of the current bot message already emitted
        self._sent_text = False
        self._done = False
        self._sources: list[tuple[str, str]] = []  # (url, title) of every InternalSearchResult item
        self._last_doc_loading = ""

    @property
    def sent_text(self) -> bool:
        """Whether any `message` text has been emitted in this turn (a retry would repeat it)."""
        return self._sent_text

    @property
    def done(self) -> bool:
        return self._done

    def feed(self, record: dict[str, Any]) -> list[TurnItem]:
        if self._done:
            return []
        kind = record.get("type")
        if kind == 1:
            return self._update(record)
        if kind == 2:
            return self._result(record)
        if kind == 7:
            self._done = True
            return [TurnFailed("Closed", _s(record.get("error")) or "Connection closed with an error.")]
        if kind == 3:
            self._done = True
            return [TurnFailed("Completion", _s(record.get("error")) or "the chat invocation ended without a result")]
        return []  # type:6 pings and anything else

    def _update(self, record: dict[str, Any]) -> list[TurnItem]:
        argument = _path(record, "arguments", 0)
        message = _path(argument, "messages", 0)
        if not isinstance(message, dict):
            return []  # throttling-only frames and the like
        text = _s(message.get("text"))
        hidden = _s(message.get("hiddenText"))
        origin = _s(message.get("contentOrigin"))
        match _s(message.get("messageType")):
            case "":
                return self._text(argument, message, text, origin)
            case "InternalSearchQuery":
                return [SydneyEvent("search_query", text)]
            case "InternalSearchResult":
                self._collect_sources(text, hidden)
                return []
            case "InternalLoaderMessage":
                return self._loading(message, text, hidden, origin)
            case "GenerateContentQuery":
                return self._generate(message, text, hidden)
            case "Progress":
                if origin == "CodeInterpreter":
                    invocation = _s(message.get("invocation"))
                    return [SydneyEvent("executing_task", invocation)] if invocation else []
                if origin == "OpenAPI-spec":
                    call = _s(_path(message, "adaptiveCards", 0, "body", 0, "columns", 0, "items", 0, "text"))
                    return [SydneyEvent("openapi_call", call)] if call else []
                return []
            case "GeneratedCode":
                return [SydneyEvent("generated_code", text)]
            case _:
                return []  # Disengaged and other types SydneyQt does not support

    def _text(self, argument: dict[str, Any], message: dict[str, Any], text: str, origin: str) -> list[TurnItem]:
        items: list[TurnItem] = []
        if "cursor" in argument:
            self._wrote = 0
            items.extend(self._citations(message, text))
        if origin == "Apology":
            self._done = True
            items.append(TurnFailed("Apology", REVOKED if self._sent_text else FILTERED))
            return items
        if len(text) > self._wrote:
            items.append(SydneyEvent("message", text[self._wrote :]))
            self._sent_text = True
        self._wrote = len(text)
        suggested = _suggestions(message)
        if suggested is not None:
            items.append(SydneyEvent("suggested_responses", gojson.marshal(suggested)))
        return items

    def _citations(self, message: dict[str, Any], text: str) -> list[TurnItem]:
        """§3.7: the card text minus the message text holds `[n]: <url>` reference lines; those whose
        url equals an earlier search result's become a `search_result` event. A line keeps its
        quoted title, so only the empty-title form (`[1]: url ""`) matches."""
        card = _s(_path(message, "adaptiveCards", 0, "body", 0, "text"))
        if text and card.endswith(text):
            card = card[: -len(text)]
        if not card.strip():
            return []
        found: list[str] = []
        for raw_line in card.split("\n"):
            line = raw_line.strip(' "')
            match = _CITATION.search(line) if line else None
            if match is None:
                continue
            link = match.group(2)
            title = next((title for url, title in self._sources if url == link), None)
            if title is not None:
                found.append("  " + gojson.marshal({"index": _atoi(match.group(1)), "link": link, "title": title}))
        return [SydneyEvent("search_result", "[\n" + ",\n".join(found) + "\n]")] if found else []

    def _collect_sources(self, text: str, hidden: str) -> None:
        if _NO_RESULTS in hidden:
            return
        try:
            parsed = orjson.loads(text)
        except orjson.JSONDecodeError:
            return
        # SydneyQt ignores the key names: every value of every group is a list of result items.
        for group in _array(parsed):
            values = group.values() if isinstance(group, dict) else _array(group)
            for value in values:
                for item in _array(value):
                    if isinstance(item, dict):
                        self._sources.append((_s(item.get("url")), _s(item.get("title"))))

    def _loading(self, message: dict[str, Any], text: str, hidden: str, origin: str) -> list[TurnItem]:
        if origin in _DOC_PROGRESS:
            progress = f"{text} {hidden} ({origin})"
            if progress == self._last_doc_loading:  # documents repeat their progress line
                return []
            self._last_doc_loading = progress
            return [SydneyEvent("loading", progress)]
        if "hiddenText" in message:
            return [SydneyEvent("loading", hidden)]
        if "text" in message:
            return [SydneyEvent("loading", text)]
        return [SydneyEvent("loading", orjson.dumps(message).decode())]

    def _generate(self, message: dict[str, Any], text: str, hidden: str) -> list[TurnItem]:
        content_type = _s(message.get("contentType"))
        message_id = _s(message.get("messageId"))
        if content_type == "IMAGE":
            # q is Go's url.QueryEscape (space → '+'); iframeid goes in as sent, as SydneyQt does.
            url = self._image_prefix + quote_plus(text) + "&iframeid=" + message_id
            return [SydneyEvent("generative_image", gojson.marshal({"text": text, "url": url}))]
        if content_type == "SUNO":
            music = {
                "iframeid": message_id,
                "requestid": hidden.removeprefix("RequestId="),
                "text": _s(message.get("invocation")),
            }
            return [SydneyEvent("generative_music", gojson.marshal(music))]
        return []

    def _result(self, record: dict[str, Any]) -> list[TurnItem]:
        self._done = True
        item = record.get("item")
        value = _s(_path(item, "result", "value"))
        if value != "Success":
            return [TurnFailed(value, _s(_path(item, "result", "message")))]
        items: list[TurnItem] = []
        suggested: list[str] = []
        messages = _path(item, "messages")
        last = messages[-1] if isinstance(messages, list) and messages else None
        if isinstance(last, dict):
            found = _suggestions(last)
            if found is not None:
                suggested = found
                items.append(SydneyEvent("suggested_responses", gojson.marshal(found)))
        throttling = _path(item, "throttling")
        items.append(TurnEnd(suggested, throttling if isinstance(throttling, dict) else None))
        return items


def _suggestions(message: dict[str, Any]) -> list[str] | None:
    """The `text` of each suggested response; None when there are none to emit."""
    entries = _array(message.get("suggestedResponses"))
    texts = [_s(entry.get("text")) if isinstance(entry, dict) else "" for entry in entries]
    return texts or None
