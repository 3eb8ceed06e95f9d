"""The `chat` StreamInvocation (type:4, sheet §2.4): the fields the fake acts on, checked.
Everything else (locationHints, allowedMessageTypes, ...) is tolerated unread, as the sheet says."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class InvocationError(ValueError):
    """The invocation cannot be answered: an InvalidRequest result naming the field."""


@dataclass(slots=True)
class Invocation:
    invocation_id: str
    request_id: str
    message_id: str
    text: str
    context: str | None  # previousMessages[0].description
    image_url: str | None
    tone: str | None
    options_sets: list[str]
    conversation_id: str
    participant_id: str
    start_of_session: bool | None

    def summary(self) -> dict[str, Any]:
        """What the requests log shows (the text is the user's, not a secret)."""
        return {"text": self.text, "context": self.context, "tone": self.tone, "optionsSets": self.options_sets,
                "imageUrl": self.image_url, "isStartOfSession": self.start_of_session,
                "invocationId": self.invocation_id, "conversationId": self.conversation_id,
                "participantId": self.participant_id}


def _str(obj: dict[str, Any], key: str, where: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str) or not value:
        raise InvocationError(f"{where}{key} must be a non-empty string")
    return value


def invocation_id_of(record: dict[str, Any]) -> str:
    value = record.get("invocationId")
    return value if isinstance(value, str) else "0"


def parse(record: dict[str, Any]) -> Invocation:
    invocation_id = record.get("invocationId")
    if not isinstance(invocation_id, str):
        raise InvocationError("invocationId must be a string (SignalR StreamInvocation)")
    args = record.get("arguments")
    if not isinstance(args, list) or not args or not isinstance(args[0], dict):
        raise InvocationError("arguments must be a list holding one object")
    arg: dict[str, Any] = args[0]
    message = arg.get("message")
    if not isinstance(message, dict):
        raise InvocationError("arguments[0].message must be an object")
    text = _str(message, "text", "arguments[0].message.")
    participant = arg.get("participant")
    if not isinstance(participant, dict):
        raise InvocationError("arguments[0].participant must be an object {id}")
    image_url = message.get("imageUrl")
    if image_url is not None and not isinstance(image_url, str):
        raise InvocationError("arguments[0].message.imageUrl must be a string or null")
    options = arg.get("optionsSets", [])
    if not isinstance(options, list) or not all(isinstance(o, str) for o in options):
        raise InvocationError("arguments[0].optionsSets must be a list of strings")
    tone = arg.get("tone")
    if tone is not None and not isinstance(tone, str):
        raise InvocationError("arguments[0].tone must be a string")
    previous = arg.get("previousMessages")
    if previous is not None and not isinstance(previous, list):
        raise InvocationError("arguments[0].previousMessages must be a list")
    context = None
    if previous and isinstance(previous[0], dict) and isinstance(previous[0].get("description"), str):
        context = previous[0]["description"]
    start = arg.get("isStartOfSession")
    request_id = arg.get("requestId") or message.get("requestId") or message.get("messageId") or invocation_id
    return Invocation(
        invocation_id=invocation_id, request_id=str(request_id), message_id=str(message.get("messageId") or request_id),
        text=text, context=context, image_url=image_url or None, tone=tone, options_sets=list(options),
        conversation_id=_str(arg, "conversationId", "arguments[0]."),
        participant_id=str(_str(participant, "id", "arguments[0].participant.")),
        start_of_session=start if isinstance(start, bool) else None,
    )
