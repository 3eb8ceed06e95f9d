"""SydneyQt's events (libs/bing/turn.py SydneyEvent) as the OpenAI chat route carries them: a
`message` event is content; three others become extra fields of a chunk's delta, their JSON text
parsed (SydneyQt double-encodes them as strings, §9.4): `search_result` → `search_results` (a
list of {index, link, title}), `suggested_responses` (a list of strings), `generative_image`
({text, url}). Every other event type has no place on this route and is dropped.
"""

from __future__ import annotations

from typing import Any

import orjson

from libs.bing.turn import SydneyEvent

CONVERSATION_HEADER = "x-switchyard-conversation-id"
# SydneyQt's event name -> the delta field it travels in
EXTRA_FIELDS = {"search_result": "search_results", "suggested_responses": "suggested_responses",
                "generative_image": "generative_image"}


def is_text(event: SydneyEvent) -> bool:
    return event.type == "message" and bool(event.text)


def extra_field(event: SydneyEvent) -> tuple[str, Any] | None:
    """(delta field, value) for an event the chat route carries; None for the rest (or JSON
    text that does not parse: a malformed event is not worth failing an answer over)."""
    name = EXTRA_FIELDS.get(event.type)
    if name is None:
        return None
    try:
        return name, orjson.loads(event.text)
    except orjson.JSONDecodeError:
        return None


class Extras:
    """Extra fields waiting for a delta to ride on (before the first text they wait for it)."""

    def __init__(self) -> None:
        self._fields: dict[str, Any] = {}

    def add(self, event: SydneyEvent) -> bool:
        found = extra_field(event)
        if found is None:
            return False
        self._fields[found[0]] = found[1]
        return True

    def take(self) -> dict[str, Any]:
        fields, self._fields = self._fields, {}
        return fields
