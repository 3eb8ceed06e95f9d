"""The errors of the Bing library, one tree. Every message is secret-free by construction: no cookie
value, token or signature is ever formatted into one, so a worker may log or forward any of them.

    BingError
    ├── MalformedFrame (ValueError)   a websocket record that is not a JSON object
    ├── CreateFailed                  conversation/create: non-200, result.value != Success, bad body
    ├── BingUnavailable               a transport error, or a non-200 HTTP answer (status when known)
    ├── UploadRejected                kblob answered without a blobId (the image was refused)
    ├── ChatRefused                   the ChatHub upgrade got a status other than 101
    ├── ChatClosed                    the chat socket ended before the turn's type:2 result
    └── ChatTimeout (TimeoutError)    no websocket message for read_timeout (or the open timed out)

Turn-level outcomes that the server states itself (type:2 errors, Apology, type:7) are not
exceptions: `TurnReader` yields them as `TurnFailed` items.
"""

from __future__ import annotations

import asyncio


class BingError(Exception):
    """Base of every error this library raises on purpose."""


class MalformedFrame(BingError, ValueError):
    """A SignalR record that is not valid JSON, or not a JSON object."""


class CreateFailed(BingError):
    """`conversation/create` did not give a usable conversation.

    `value` is the upstream's `result.value` (`UnauthorizedRequest`, ...), `HTTP <status>` for a
    non-200 answer, or `Malformed` for a body that is not the expected JSON."""

    def __init__(self, status: int, value: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.value = value
        self.message = message


class BingUnavailable(BingError):
    """The upstream could not be reached or answered with an unexpected HTTP status."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class UploadRejected(BingError):
    """kblob accepted the request but returned no blobId: Bing refused the image."""


class ChatRefused(BingError):
    """The websocket upgrade was answered with `status` instead of 101."""

    def __init__(self, status: int) -> None:
        super().__init__(f"cannot establish a websocket connection: HTTP {status}")
        self.status = status


class ChatClosed(BingError):
    """The chat socket ended (normally or not) before the turn's final type:2 record."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class ChatTimeout(BingError, asyncio.TimeoutError):
    """No websocket message arrived within the read timeout (or the socket did not open in time)."""
