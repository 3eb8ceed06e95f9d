"""The common chat body is validated without a helper call per container (the hot path)."""

from __future__ import annotations

from typing import Any

import pytest

from services.edge import validation


def test_a_plain_chat_body_takes_no_generic_type_check_call(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    expect = validation._expect

    def counted(value: Any, path: str, types: tuple[type, ...], expected: str) -> None:
        calls.append(path)
        expect(value, path, types, expected)

    monkeypatch.setattr(validation, "_expect", counted)
    body = {"model": "m", "messages": [{"role": "system", "content": "Be brief."},
                                       {"role": "user", "content": "Say hi."}]}
    assert validation.validate_chat_request(body) == []
    assert calls == []  # `messages` (an array) and each message (an object) check their type inline
    with pytest.raises(validation.InvalidRequest, match="expected an object, but got a string"):
        validation.validate_chat_request({"model": "m", "messages": ["hi"]})
