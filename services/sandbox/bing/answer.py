"""What the hub sends for one `chat` invocation, as a list of steps (frames, pauses, an ending),
built before any is sent so the order is deterministic (sheet §3, §4; directives: see __init__)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from ..directives import strip
from ..generate import DEFAULT_TOKENS, seed_of, tokens
from . import ids, messages, signalr
from .conversations import Conversation
from .directives import Directives
from .invocation import Invocation

SEARCH_RESULTS = 3
IMAGE_PROMPT_CHARS = 60


@dataclass(slots=True)
class Step:
    frame: str | None = None  # one websocket text frame
    pause_ms: int = 0  # send nothing (not even pings) this long
    end: str | None = None  # "close7" | "drop": end the socket this way after this step


def answer_words(text: str, context: str | None, image: str | None, count: int = DEFAULT_TOKENS) -> list[str]:
    """The answer's words, each sent as one more word of cumulative text. `image`: None (no imageUrl),
    "known" (names an uploaded blob) or "unknown". Tests import this to know the exact answer."""
    words: list[str] = []
    if image == "known":
        words += ["I", "see", "your", "image."]
    elif image == "unknown":
        words += ["I", "cannot", "see", "your", "image."]
    if context and context.strip():
        words += f"I read your context of {len(context)} characters.".split()
    return words + [t.strip() for t in tokens(seed_of(strip(text)), 0, count)]


def error_message(value: str, conv: Conversation | None, conversation_id: str, ttl_text: str) -> str:
    if value == "InvalidSession":
        return f"Conversation '{conversation_id}' doesn't exist or has expired. Conversations expire after {ttl_text}."
    if value == "InvalidRequest":
        count = conv.user_messages * 2 if conv else 0
        return f"Conversation '{conversation_id}' with {count} messages already exists."
    return messages.ERROR_MESSAGES[value]


class _Builder:
    def __init__(self, conv: Conversation, inv: Invocation, d: Directives) -> None:
        self.conv, self.inv, self.d = conv, inv, d
        self.steps: list[Step] = []
        self.bot_messages: list[dict[str, Any]] = []
        self.sent = 0  # words of text sent so far, over all text messages

    def frame(self, *records: dict[str, Any]) -> None:
        self.steps.append(Step(frame=signalr.encode(*records)))

    def update(self, message: dict[str, Any], cursor: bool, ping: bool = False) -> dict[str, Any]:
        """A type:1 frame of `message`; the first text frame also carries a ping record before it, so
        every answer holds two records in one frame and a server ping."""
        record = messages.update(self.inv.request_id, message, cursor)
        self.steps.append(Step(frame=(signalr.PING if ping else "") + signalr.encode(record)))
        return message


def build(conv: Conversation, inv: Invocation, d: Directives, image: str | None, fault: str | None,
          ttl_text: str) -> tuple[list[Step], str]:
    """(steps, outcome: Success, an error result value, close7 or drop). `fault`: an armed control
    fault, which wins over the prompt's directives."""
    b = _Builder(conv, inv, d)
    words = answer_words(inv.text, inv.context, image, d.ints.get("tokens", DEFAULT_TOKENS))
    total = len(words)
    result, ending = d.result, ("close7" if "close7" in d.flags else "drop" if "drop" in d.flags else None)
    after = d.ints.get("after")
    if fault is not None:
        result, ending, after = (None, fault, None) if fault in ("close7", "drop") else (fault, None, 0)
    stop_at = after if after is not None else (total // 2 if ending == "drop" else 0)
    stop = result is not None or ending is not None
    silence_at = d.ints.get("after", total // 2) if "silence_ms" in d.ints else -1
    apology_at = min(d.ints["apology"], total) if "apology" in d.ints else -1

    def finish_error(value: str) -> tuple[list[Step], str]:
        message = error_message(value, conv, inv.conversation_id, ttl_text)
        b.frame(messages.error(inv.invocation_id, inv.conversation_id, inv.request_id, value, message),
                messages.completion(inv.invocation_id))
        return b.steps, value

    def ending_now() -> tuple[list[Step], str]:
        if result is not None:
            return finish_error(result)
        if ending == "close7":
            b.steps.append(Step(frame=signalr.close("Connection closed with an error."), end="close7"))
            return b.steps, "close7"
        b.steps.append(Step(end="drop"))
        return b.steps, "drop"

    if stop and stop_at == 0:
        return ending_now()
    b.frame(messages.throttling_update(inv.request_id, conv.user_messages + 1))
    if "loading" in d.flags:
        text = "Generating answers for you..."
        b.bot_messages.append(b.update(messages.bot(
            ids.message_id(), inv.request_id, text, messageType="InternalLoaderMessage", hiddenText=text,
            adaptiveCards=messages.inline_card(text)), cursor=False))
    refs = ""
    learn_more: list[dict[str, Any]] = []
    attributions: list[dict[str, Any]] = []
    if "search" in d.flags:
        query = " ".join(strip(inv.text).split()[:4]) or "sandbox"
        shown = f"Searching the web for: `{query}`"
        b.bot_messages.append(b.update(messages.bot(
            ids.message_id(), inv.request_id, shown, messageType="InternalSearchQuery", hiddenText=query,
            adaptiveCards=messages.inline_card(shown)), cursor=False))
        key = seed_of(strip(inv.text))
        results = [{"title": f"Sandbox result {i}", "url": f"https://sandbox.invalid/search/{key:08x}/{i}",
                    "snippets": [f"Snippet {i} about {query}."]} for i in range(1, SEARCH_RESULTS + 1)]
        b.bot_messages.append(b.update(messages.bot(
            ids.message_id(), inv.request_id, orjson.dumps([{"web_search_results": results}]).decode(),
            messageType="InternalSearchResult", hiddenText="", adaptiveCards=[]), cursor=False))
        refs = "".join(f'[{i}]: {r["url"]} ""\n' for i, r in enumerate(results, 1)) + "\n"
        learn_more = [{"type": "TextBlock", "size": "small", "wrap": True, "text": "Learn more: " + " ".join(
            f"[{i}. sandbox.invalid]({r['url']})" for i, r in enumerate(results, 1))}]
        attributions = [{"providerDisplayName": r["title"], "seeMoreUrl": r["url"], "searchQuery": query}
                        for r in results]

    half = max(1, total // 2)
    parts = [words[:half], words[half:] or ["Anyway."]] if "two_messages" in d.flags else [words]
    final_text = ""
    first_frame = True
    for part in parts:
        message_id = ids.message_id()
        text = ""
        apologised = False
        k = 0
        # the shrink comes before the last word, so the stream still ends on the whole text
        shrink_at = max(2, len(part) // 2) if "shrink" in d.flags and part is parts[0] and len(part) >= 3 else -1
        while k < len(part) or apology_at == b.sent:
            if apology_at == b.sent:
                apology = messages.bot(message_id, inv.request_id, messages.APOLOGY_TEXT, contentOrigin="Apology")
                b.update(apology, cursor=(k == 0), ping=first_frame)
                b.bot_messages.append(apology)
                final_text, apologised = messages.APOLOGY_TEXT, True
                break
            k += 1
            text = " ".join(part[:k])
            extra = {"adaptiveCards": messages.card(refs + text)} if refs else {}
            b.update(messages.bot(message_id, inv.request_id, text, **extra), cursor=(k == 1), ping=first_frame)
            first_frame = False
            b.sent += 1
            if k == shrink_at:
                shorter = " ".join(part[: k - 1])
                extra = {"adaptiveCards": messages.card(refs + shorter)} if refs else {}
                b.update(messages.bot(message_id, inv.request_id, shorter, **extra), cursor=False)
            if b.sent == silence_at:
                b.steps.append(Step(pause_ms=d.ints["silence_ms"]))
            if stop and b.sent == stop_at:
                return ending_now()
        if apologised:
            break
        final_text = text
        b.bot_messages.append(messages.bot(
            message_id, inv.request_id, text, adaptiveCards=messages.card(refs + text, *learn_more),
            sourceAttributions=attributions if refs else []))
    else:
        if "image" in d.flags:
            prompt = "a picture of " + strip(inv.text)[:IMAGE_PROMPT_CHARS] + d.creator_bracket()
            gcq = messages.bot(ids.message_id(), inv.request_id, prompt, messageType="GenerateContentQuery",
                               contentType="IMAGE", adaptiveCards=[])
            b.bot_messages.append(b.update(gcq, cursor=False))
    if stop:  # `after` beyond the answer: the ending comes where the text ends
        return ending_now()
    conv.user_messages += 1
    b.bot_messages[-1]["suggestedResponses"] = messages.suggestions(words)
    echo = messages.user_echo(conv, inv.request_id, inv.message_id, inv.text, inv.image_url)
    b.frame(messages.final(inv.invocation_id, conv, inv.request_id, [echo, *b.bot_messages], final_text),
            messages.completion(inv.invocation_id))
    return b.steps, "Success"

