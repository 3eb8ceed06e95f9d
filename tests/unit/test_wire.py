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


@pytest.mark.parametrize("text", [
    "plain ascii " * 2000,
    '"quoted" and \\back\\slashed ' * 2000,  # 2 bytes each inside a JSON string
    "emoji 😀 and ü and 中 " * 2000,  # up to 4 bytes per character
    "\n\t\x01 control " * 2000,
])
def test_fragments_stay_within_the_limit_and_join_to_the_payload(text: str) -> None:
    payload = wire.encode([{"type": "delta", "job_id": "j", "attempt": 2, "seq": 1,
                            "choices": [{"index": 0, "delta": {"content": text}}]},
                           {"type": "end", "job_id": "j", "attempt": 2, "seq": 2}])
    limit = 4096
    parts = wire.fragments(payload, limit, "j", 2, 1)
    assert len(parts) > 1 and all(len(part) <= limit for part in parts)
    decoded = [wire.decode(part) for part in parts]
    assert [d["part"] for d in decoded] == list(range(len(parts)))
    assert [d["last"] for d in decoded] == [False] * (len(parts) - 1) + [True]
    assert {(d["type"], d["job_id"], d["attempt"], d["seq"]) for d in decoded} == {("fragment", "j", 2, 1)}
    assert "".join(d["data"] for d in decoded).encode() == payload


def test_a_payload_just_over_one_step_makes_two_fragments() -> None:
    step = (4096 - 512) // 4
    payload = b"x" * (step + 1)
    parts = [wire.decode(p) for p in wire.fragments(payload, 4096, "j", 1, 0)]
    assert [len(p["data"]) for p in parts] == [step, 1]
