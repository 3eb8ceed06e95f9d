"""Bus payload coding: one reply, or a batch of them (the reply subject allows both)."""

from __future__ import annotations

import pytest

from libs import wire


def test_one_message_and_a_batch_decode_to_a_list() -> None:
    one = {"type": "heartbeat", "job_id": "j", "attempt": 1, "seq": 2}
    assert wire.decode_batch(wire.encode(one)) == [one]
    batch = [one, {**one, "seq": 3}]
    assert wire.decode_batch(wire.encode(batch)) == batch


@pytest.mark.parametrize("payload", [b"", b"not json", b"[]", b"[1]", b'[{"a": 1}, 2]', b'"text"', b"3", b"null"])
def test_anything_else_is_a_value_error(payload: bytes) -> None:
    with pytest.raises(ValueError):
        wire.decode_batch(payload)


def test_decode_still_wants_an_object() -> None:
    assert wire.decode(b'{"a": 1}') == {"a": 1}
    with pytest.raises(ValueError):
        wire.decode(b"[]")
