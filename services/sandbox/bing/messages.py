"""The JSON shapes of the hub's server frames (sheet §3.1-§3.3), built from plain values."""

from __future__ import annotations

from typing import Any

from . import ids
from .conversations import MAX_USER_MESSAGES, Conversation

SERVICE_VERSION = "20240301.1"
FEEDBACK = {"tag": None, "updatedOn": None, "type": "None"}
ERROR_MESSAGES = {
    "Throttled": "Request is throttled.",
    "CaptchaChallenge": "User needs to solve CAPTCHA to continue.",
    "UnauthorizedRequest": "The conversationSignature is not set and is required to ensure that you have "
                           "permission to use our APIs. IsAuthenticated=False. App ID=",
    "ProcessingMessage": "A previous message is still being processed.",
}
APOLOGY_TEXT = "My mistake, I can\u2019t give a response to that right now. Let\u2019s try a different topic."


def card(text: str, *more: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"type": "AdaptiveCard", "version": "1.0",
             "body": [{"type": "TextBlock", "text": text, "wrap": True}, *more]}]


def inline_card(text: str) -> list[dict[str, Any]]:
    """The progress-card form: display text in body[0].inlines[0].text (what EdgeGPT reads)."""
    return [{"type": "AdaptiveCard", "version": "1.0", "body": [{"type": "RichTextBlock", "inlines": [
        {"type": "TextRun", "isSubtle": True, "italic": True, "text": text}]}]}]


def bot(message_id: str, request_id: str, text: str, **fields: Any) -> dict[str, Any]:
    """A bot message. Untyped chat text carries no messageType; `fields` add or override keys."""
    stamp = ids.now_iso()
    message: dict[str, Any] = {
        "text": text, "author": "bot", "createdAt": stamp, "timestamp": stamp, "messageId": message_id,
        "requestId": request_id, "offense": "None", "adaptiveCards": card(text), "sourceAttributions": [],
        "feedback": FEEDBACK, "contentOrigin": "DeepLeo", "privacy": None,
    }
    message.update(fields)
    return message


def update(request_id: str, message: dict[str, Any], cursor: bool) -> dict[str, Any]:
    """A type:1 update; `cursor` marks the first frame of a new bot message (§3.1 b, §3.5)."""
    argument: dict[str, Any] = {}
    if cursor:
        argument["cursor"] = {"j": f"$['{message['messageId']}'].adaptiveCards[0].body[0].text", "p": -1}
    argument["messages"] = [message]
    argument["requestId"] = request_id
    return {"type": 1, "target": "update", "arguments": [argument]}


def throttling(count: int) -> dict[str, int]:
    return {"maxNumUserMessagesInConversation": MAX_USER_MESSAGES, "numUserMessagesInConversation": count}


def throttling_update(request_id: str, count: int) -> dict[str, Any]:
    return {"type": 1, "target": "update", "arguments": [{"requestId": request_id, "throttling": throttling(count)}]}


def user_echo(conv: Conversation, request_id: str, message_id: str, text: str, image_url: str | None,
              ) -> dict[str, Any]:
    stamp = ids.now_iso()
    echo: dict[str, Any] = {
        "text": text, "author": "user", "from": {"id": conv.client_id, "name": None}, "createdAt": stamp,
        "timestamp": stamp, "locale": "en-us", "market": "en-us", "region": "us", "messageId": message_id,
        "requestId": request_id, "offense": "None", "feedback": FEEDBACK, "contentOrigin": "cib", "privacy": None,
        "inputMethod": "Keyboard",
    }
    if image_url:
        echo["imageUrl"] = image_url
    return echo


def suggestions(words: list[str]) -> list[dict[str, Any]]:
    texts = [f"Tell me more about {words[0]}", f"What is {words[1]}?", "Thanks"] if len(words) >= 2 else ["Thanks"]
    return [{"text": t, "author": "user", "createdAt": ids.now_iso(), "timestamp": ids.now_iso(),
             "messageId": ids.message_id(), "messageType": "Suggestion", "offense": "Unknown", "feedback": FEEDBACK,
             "contentOrigin": "DeepLeo", "privacy": None} for t in texts]


def final(invocation_id: str, conv: Conversation, request_id: str, messages: list[dict[str, Any]], answer: str,
          ) -> dict[str, Any]:
    """The Success type:2 item: the user echo then every bot message of the turn (§3.2)."""
    return {"type": 2, "invocationId": invocation_id, "item": {
        "messages": messages, "firstNewMessageIndex": 1, "defaultChatName": None, "conversationId": conv.id,
        "requestId": request_id, "conversationExpiryTime": ids.iso_at(conv.created + conv.ttl),
        "shouldInitiateConversation": True, "telemetry": {"metrics": None, "startTime": ids.now_iso()},
        "throttling": throttling(conv.user_messages),
        "result": {"value": "Success", "message": answer, "serviceVersion": SERVICE_VERSION},
    }}


def error(invocation_id: str, conversation_id: str, request_id: str, value: str, message: str) -> dict[str, Any]:
    """An error type:2: an item without messages, `result.value` other than Success (§3.2)."""
    return {"type": 2, "invocationId": invocation_id, "item": {
        "firstNewMessageIndex": None, "defaultChatName": None, "conversationId": conversation_id,
        "requestId": request_id,
        "result": {"value": value, "message": message, "error": message, "serviceVersion": SERVICE_VERSION},
    }}


def completion(invocation_id: str) -> dict[str, Any]:
    return {"type": 3, "invocationId": invocation_id}

