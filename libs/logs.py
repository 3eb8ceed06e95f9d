"""JSON-lines logging with secret redaction.

Secrets (API keys, bearer tokens, cookies, access tokens) must never reach a log line, even when
an upstream echoes them in an error body, so every record passes through `redact`.

Every line a service writes is one JSON object with an ISO-8601 UTC `ts`: its own loggers,
nats-py's, and uvicorn's (`log_config` is handed to uvicorn too, which applies its
`log_config` when its Config is built and would otherwise install its own plain-text handlers).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import logging.config
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import orjson

from libs.errors import BusError
from libs.secrets import scrub
from libs.settings import ConfigError


def redact(text: str) -> str:
    """Replace every held secret and anything that looks like a credential with a marker."""
    return scrub(text)


def url_without_credentials(url: str) -> str:
    """`nats://user:pass@host:4222` -> `nats://host:4222`: a URL fit for a log line or a message."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


# the record attributes an access or job line may carry, copied into the JSON object when set
_EXTRAS = ("request_id", "job_id", "model", "pool", "status", "disconnected", "duration_ms", "attempt", "worker_id")


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service
        # the date-and-seconds part of `ts`, formatted once per second rather than once per line
        self._second = -1
        self._second_text = ""

    def iso_time(self, created: float) -> str:
        """`2026-12-06T08:34:33.123Z`: UTC, milliseconds."""
        second = int(created)
        if second != self._second:
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._second_text}.{int((created - second) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self.iso_time(record.created),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        for key in _EXTRAS:
            value = record.__dict__.get(key)
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        return orjson.dumps(entry).decode()


# errors whose message says all an operator needs: logged as one line, without a traceback
EXPECTED_START_ERRORS = (ConfigError, BusError)
_EXPECTED_NAMES = tuple(f"{cls.__module__}.{cls.__qualname__}: " for cls in EXPECTED_START_ERRORS)
_CANCELLED = "asyncio.exceptions.CancelledError"


class StartupFailure(logging.Filter):
    """uvicorn's report of a lifespan start-up that raised, as one line when the error is an
    expected one (NATS unreachable, bad configuration) rather than a traceback followed by
    "Application startup failed. Exiting."; unexpected errors keep their traceback. A start-up
    cancelled by a signal is reported by the server that cancelled it, so uvicorn's traceback of
    the cancellation is dropped.

    Starlette reports a lifespan error as traceback text (`lifespan.startup.failed`), uvicorn as
    a record with exc_info; both forms are recognised."""

    def __init__(self) -> None:
        super().__init__()
        self.reported = False

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != "uvicorn.error":
            return True
        if self.reported and record.msg == "Application startup failed. Exiting.":
            return False
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, asyncio.CancelledError):
            return False
        if isinstance(exc, EXPECTED_START_ERRORS):
            self._one_line(record, str(exc))
        elif isinstance(record.msg, str) and record.msg.startswith("Traceback"):
            last = record.msg.rstrip().rpartition("\n")[2]
            if last.startswith(_CANCELLED):
                return False
            for name in _EXPECTED_NAMES:
                if last.startswith(name):
                    self._one_line(record, last.removeprefix(name))
        return True

    def _one_line(self, record: logging.LogRecord, message: str) -> None:
        record.msg, record.args, record.exc_info, record.exc_text = "start-up failed: %s", (message,), None, None
        self.reported = True


def log_config(service: str, level: str = "INFO") -> dict[str, Any]:
    """A `logging.config.dictConfig` configuration: every logger through one JSON handler on stderr.
    Also uvicorn's `log_config`, so that uvicorn applying it when its Config is built changes nothing."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter, "service": service}},
        "filters": {"startup": {"()": StartupFailure}},
        # the filter sits on the handler, which each configuration replaces, so that configuring
        # twice (setup_logging, then uvicorn) leaves one
        "handlers": {"stderr": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr", "formatter": "json",
                                "filters": ["startup"]}},
        "root": {"handlers": ["stderr"], "level": level.upper()},
        "loggers": {
            # nats-py logs at INFO on every reconnect; keep it but not its debug chatter
            "nats": {"level": "WARNING"},
            # uvicorn's loggers lose their own plain-text handlers and reach the root's
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True},
            "uvicorn.access": {"handlers": [], "propagate": True},
        },
    }


def setup_logging(service: str, level: str = "INFO") -> None:
    """JSON lines on stderr for every logger. An unknown LOG_LEVEL is a ConfigError, raised after
    logging is set up at INFO so that it is reported as a JSON line like any other."""
    known = level.upper() in logging.getLevelNamesMapping()
    logging.config.dictConfig(log_config(service, level if known else "INFO"))
    if not known:
        raise ConfigError(f"LOG_LEVEL must be one of debug, info, warning, error, critical; got {level!r}")


@contextlib.contextmanager
def config_errors_exit(service: str) -> Iterator[None]:
    """A ConfigError while starting becomes one log line naming the variable, and exit status 2
    (a usage error), never a traceback."""
    try:
        yield
    except ConfigError as exc:
        logging.getLogger(f"switchyard.{service}").error("configuration error: %s", exc)
        raise SystemExit(2) from None
