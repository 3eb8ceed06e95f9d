"""The edge's JSON depth limit (services/edge/asgi_io.py) and its fast path for short bodies."""

from __future__ import annotations

import orjson
import pytest

from libs.errors import InvalidRequest
from services.edge import asgi_io
from services.edge.asgi_io import MAX_JSON_DEPTH, parse_json_object


def nested(levels: int, *, pad: int = 0) -> bytes:
    """A body `levels` deep (the body itself is level 1), its first field padded by `pad` bytes."""
    return b'{"p":"' + b"x" * pad + b'","a":' + b"[" * (levels - 1) + b"]" * (levels - 1) + b"}"


@pytest.mark.parametrize("pad", [0, 4000], ids=["short", "long"])
def test_the_limit_holds_for_short_and_long_bodies(pad: int) -> None:
    assert parse_json_object(nested(MAX_JSON_DEPTH, pad=pad))["p"] == "x" * pad
    with pytest.raises(InvalidRequest) as refused:
        parse_json_object(nested(MAX_JSON_DEPTH + 1, pad=pad))
    assert refused.value.code == "nesting_too_deep"


def test_brackets_in_strings_only_cost_the_walk_never_a_refusal() -> None:
    body = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "[{" * 100}]})
    assert len(body) <= asgi_io._COUNT_UP_TO
    assert parse_json_object(body)["messages"][0]["content"] == "[{" * 100


def test_a_short_body_with_few_brackets_is_not_walked(monkeypatch: pytest.MonkeyPatch) -> None:
    # the common request: counting its brackets (a C scan) proves it shallow, no walk per element
    def walked(value: object, limit: int) -> bool:
        raise AssertionError("walked a body that cannot be too deep")

    monkeypatch.setattr(asgi_io, "_deeper_than", walked)
    body = orjson.dumps({"model": "m", "messages": [{"role": "system", "content": "Be brief."},
                                                    {"role": "user", "content": "Say hi."}]})
    assert parse_json_object(body)["model"] == "m"
