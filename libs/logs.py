"""JSON-lines logging with secret redaction.

Secrets (API keys, bearer tokens, cookies, access tokens) must never reach a log line, even when
an upstream echoes them in an error body, so every record passes through `redact`.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import Any

import orjson

_SECRET_PATTERNS = [
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{4,}"),
    re.compile(r"\b(sk|sb|pk|rk)-[A-Za-z0-9_*.-]{6,}"),
    # a whole Cookie header value: every cookie in it is a credential
    re.compile(r"(?i)((?:set-)?cookies?[\"']?\s*[=:]\s*[\"']?)[^\"'\n}]+"),
    re.compile(
        r"(?i)([\"']?(?:api[_-]?key|access[_-]?token|refresh[_-]?token|session[_-]?token|token|secret|password"
        r"|authorization|_U)[\"']?\s*[=:]\s*[\"']?)[^\s,;\"'}]{4,}"
    ),
    re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]*"),  # JWTs
]


def redact(text: str) -> str:
    """Replace anything that looks like a credential with a marker."""
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.re.groups and m.group(1) else "") + "[redacted]", text)
    return text


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(time.time(), 3),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        for key in ("request_id", "job_id", "model", "pool", "status", "duration_ms", "attempt", "worker_id"):
            value = record.__dict__.get(key)
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        return orjson.dumps(entry).decode()


def setup_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # nats-py logs at INFO on every reconnect; keep it but not its debug chatter
    logging.getLogger("nats").setLevel(logging.WARNING)
