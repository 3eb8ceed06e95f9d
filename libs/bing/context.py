"""OpenAI chat messages folded into one Bing turn, as SydneyQt's webapi `ParseOpenAIMessages` does
(fact sheet sydney.md §9.5): the LAST user message is the prompt, every other message goes, in
order, into the web-page context blob of the invocation (§2.6).
"""

from __future__ import annotations

from typing import Any

MISSING_PROMPT = "user prompt is missing (last message is not sent by user)"
_HEADERS = {"user": "[user](#message)\n", "assistant": "[assistant](#message)\n", "system": "[system](#instructions)\n"}


def content_parts(content: Any) -> tuple[str, str]:
    """(text, image url) of one message's content: a string is the text; from a list of parts, the
    LAST `text` part's text and the LAST `image_url` part's url. Anything else gives ("", "")."""
    if isinstance(content, str):
        return content, ""
    text = image_url = ""
    if isinstance(content, list):
        for part in content:
            if not isinstance(part, dict):
                continue
            kind = part.get("type")
            if kind == "text":
                if isinstance(part.get("text"), str):
                    text = part["text"]
            elif kind == "image_url":
                image = part.get("image_url")
                if isinstance(image, dict):
                    url = image.get("url")
                    # Go's `url, _ = x.(string)`: a non-string url clears an earlier one
                    image_url = url if isinstance(url, str) else ""
    return text, image_url


def fold_openai_messages(messages: list[dict[str, Any]]) -> tuple[str, str, str | None]:
    """(prompt, context, image url or None). Raises ValueError(MISSING_PROMPT) when there is no
    user message with text, and ValueError naming the index for a message that is not an object
    with a string role (SydneyQt's JSON decoding rejected those with the same 400).

    The context keeps SydneyQt's exact text: "\\n\\n", then per message its header and text,
    "\\n\\n" between messages by position, roles other than user/assistant/system skipped (a
    skipped LAST message therefore leaves a trailing "\\n\\n", as in SydneyQt)."""
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role", ""), str | None):
            raise ValueError(f"messages[{index}] must be an object with a string role")
    prompt_index = next((i for i in range(len(messages) - 1, -1, -1) if messages[i].get("role") == "user"), None)
    if prompt_index is None:
        raise ValueError(MISSING_PROMPT)
    prompt, image_url = content_parts(messages[prompt_index].get("content"))
    if not prompt:
        raise ValueError(MISSING_PROMPT)
    if len(messages) == 1:
        return prompt, "", image_url or None
    others = messages[:prompt_index] + messages[prompt_index + 1 :]
    pieces = ["\n\n"]
    last = len(others) - 1
    for i, message in enumerate(others):
        header = _HEADERS.get(message.get("role") or "")
        if header is None:
            continue
        pieces.append(header)
        pieces.append(content_parts(message.get("content"))[0])
        if i != last:
            pieces.append("\n\n")
    return prompt, "".join(pieces), image_url or None
