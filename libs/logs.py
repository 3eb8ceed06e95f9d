"""JSON-lines logging with secret redaction.

Secrets (API keys, bearer tokens, cookies, access tokens) must never reach a log line, even when
an upstream echoes them in an error body, so every record passes through `redact`.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

from libs.secrets import scrub


def redact(text: str) -> str:
    """Replace every held secret and anything that looks like a credential with a marker."""
    return scrub(text)


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
