"""libs/logs.py: ISO-8601 timestamps, uvicorn's loggers through the JSON handler, a failed
lifespan start-up as one line, and URLs without their credentials."""

from __future__ import annotations

import asyncio
import io
import logging
import sys
import traceback
from collections.abc import Iterator

import orjson
import pytest

from libs.errors import BusError
from libs.logs import JsonFormatter, StartupFailure, log_config, url_without_credentials
from libs.settings import ConfigError


def test_ts_is_iso_8601_utc_with_milliseconds() -> None:
    formatter = JsonFormatter("edge")
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hi", None, None)
    record.created = 1796546073.1234
    assert orjson.loads(formatter.format(record))["ts"] == "2026-12-06T08:34:33.123Z"
    record.created = 1796546074.0
    assert orjson.loads(formatter.format(record))["ts"] == "2026-12-06T08:34:34.000Z"


@pytest.fixture
def uvicorn_error() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """uvicorn.error configured as the services configure it, writing to a buffer."""
    stream = io.StringIO()
    saved = sys.stderr
    sys.stderr = stream
    try:
        logging.config.dictConfig(log_config("edge"))
    finally:
        sys.stderr = saved
    yield logging.getLogger("uvicorn.error"), stream
    logging.config.dictConfig({"version": 1, "disable_existing_loggers": False, "root": {"handlers": []}})


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def test_uvicorn_lines_are_json(uvicorn_error: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = uvicorn_error
    logger.error("[Errno 98] error while attempting to bind on address ('127.0.0.1', 8080)")
    [entry] = lines(stream)
    assert entry["logger"] == "uvicorn.error" and "8080" in str(entry["msg"])


def test_starlettes_traceback_of_an_expected_start_error_becomes_one_line(
    uvicorn_error: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = uvicorn_error
    try:
        raise BusError("cannot connect to NATS at nats://127.0.0.1:1 within 10s (ConnectionRefusedError)")
    except BusError:
        text = traceback.format_exc()  # what Starlette sends as lifespan.startup.failed
    logger.error(text)
    logger.error("Application startup failed. Exiting.")
    [entry] = lines(stream)
    assert entry["msg"] == "start-up failed: cannot connect to NATS at nats://127.0.0.1:1 within 10s " \
                           "(ConnectionRefusedError)"
    assert "exc" not in entry


def test_uvicorns_record_of_an_expected_start_error_becomes_one_line(
    uvicorn_error: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = uvicorn_error
    try:
        raise ConfigError("SY_ROUTES entries must look like name=target")
    except ConfigError as exc:
        logger.error("Exception in 'lifespan' protocol\n", exc_info=exc)
    logger.error("Application startup failed. Exiting.")
    [entry] = lines(stream)
    assert entry["msg"] == "start-up failed: SY_ROUTES entries must look like name=target"


def test_an_unexpected_start_error_keeps_its_traceback(uvicorn_error: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = uvicorn_error
    try:
        raise KeyError("surprise")
    except KeyError:
        logger.error(traceback.format_exc())
    logger.error("Application startup failed. Exiting.")
    first, second = lines(stream)
    assert "KeyError" in str(first["msg"]) and "Traceback" in str(first["msg"])
    assert second["msg"] == "Application startup failed. Exiting."


def test_a_cancelled_start_is_left_to_whoever_cancelled_it() -> None:
    record = logging.LogRecord("uvicorn.error", logging.ERROR, __file__, 1, "Exception in 'lifespan' protocol\n",
                               None, (asyncio.CancelledError, asyncio.CancelledError(), None))
    assert not StartupFailure().filter(record)


@pytest.mark.parametrize(("url", "shown"), [
    ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
    ("nats://bob:hunter2@nats.example:4222", "nats://nats.example:4222"),
    ("tls://token@nats.example", "tls://nats.example"),
])
def test_url_without_credentials(url: str, shown: str) -> None:
    assert url_without_credentials(url) == shown
