"""Random identifiers in Bing's shapes, and the timestamps its frames carry."""

from __future__ import annotations

import base64
import os
import secrets
import uuid
from datetime import UTC, datetime

CONVERSATION_PREFIX = "51D|BingProd|"


def conversation_id() -> str:
    return CONVERSATION_PREFIX + os.urandom(32).hex().upper()


def client_id() -> str:
    return str(secrets.randbelow(9 * 10**14) + 10**14)  # 15 digits, never a leading zero


def signature(size: int) -> str:
    """Random standard base64 that always holds '+', '/' and '=' (size % 3 != 0 pads), so a client that
    forgets to URL-encode it in `sec_access_token` (+ read as a space, / and = unescaped) is caught."""
    text = base64.b64encode(os.urandom(size)).decode()
    assert "=" in text
    return text[:5] + "+" + text[6:11] + "/" + text[12:]


def message_id() -> str:
    return str(uuid.uuid4())


def hex_id(nbytes: int = 16) -> str:
    return os.urandom(nbytes).hex()


def now_iso() -> str:
    """Like Bing's `2024-03-01T10:00:00.1+00:00`."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def iso_at(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-5] + "Z"
