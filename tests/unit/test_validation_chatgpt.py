"""go-chatgpt-api's bodies: what the OpenAPI document says of each is what the edge accepts (both
are made from the tables of services/edge/validation_chatgpt.py), and the credential rule of its
routes (middleware.chatgpt_credentials)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from libs.errors import InvalidRequest
from services.edge.middleware import chatgpt_credentials
from services.edge.validation_chatgpt import CHATGPT_BODIES, check_id, validate_chatgpt_body
from tests.schema_strategies import JSON_VALUES, valid_bodies
from tests.unit.test_openapi import DOC, SETTINGS, has_integral_float


def schema(name: str) -> dict[str, Any]:
    found: dict[str, Any] = DOC["components"]["schemas"][name]
    return found


def accepted(name: str, body: dict[str, Any]) -> bool:
    try:
        validate_chatgpt_body(name, body)
        return True
    except InvalidRequest:
        return False


@pytest.mark.parametrize("name", sorted(CHATGPT_BODIES))
def test_what_the_document_allows_the_edge_accepts(name: str) -> None:
    @SETTINGS
    @given(valid_bodies(schema(name), DOC))
    def check(body: dict[str, Any]) -> None:
        assert accepted(name, body), body

    check()


@pytest.mark.parametrize("name", sorted(CHATGPT_BODIES))
def test_a_field_the_edge_refuses_the_document_refuses(name: str) -> None:
    """One field of a valid body replaced by any JSON value: the edge and the document agree."""
    validator = Draft202012Validator(schema(name))

    @SETTINGS
    @given(valid_bodies(schema(name), DOC), st.sampled_from(list(schema(name)["properties"])), JSON_VALUES)
    def check(body: dict[str, Any], field: str, value: Any) -> None:
        assume(value is not None and not has_integral_float(value))  # null is absent at the edge
        body = {**body, field: value}
        assert accepted(name, body) == validator.is_valid(body), (field, value)

    check()


@pytest.mark.parametrize("value", ["c-1", "3f1c2b7a-0d4e-4c1a-9a2b-1c2d3e4f5a6b", "A" * 64])
def test_conversation_ids_pass(value: str) -> None:
    assert check_id(value, "conversation_id") == value


@pytest.mark.parametrize("value", ["", "a" * 65, "a_b", "a/b", "..", "a%2Fb", "c-1?x=1", "é"])
def test_anything_else_in_a_path_is_refused(value: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        check_id(value, "conversation_id")
    assert caught.value.param == "conversation_id"


JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"


@pytest.mark.parametrize(("headers", "expected"), [
    ({}, (None, None)),
    ({b"authorization": b"Bearer key-1"}, (None, "key-1")),
    ({b"authorization": b"key-1"}, (None, "key-1")),
    ({b"authorization": b"bearer  key-1 "}, (None, "key-1")),
    ({b"authorization": f"Bearer {JWT}".encode()}, (JWT, None)),
    ({b"authorization": JWT.encode()}, (JWT, None)),
    ({b"authorization": JWT.encode(), b"x-api-key": b"key-1"}, (JWT, "key-1")),
    ({b"x-authorization": f"Bearer {JWT}".encode(), b"authorization": b"Bearer key-1"}, (JWT, "key-1")),
    ({b"x-authorization": JWT.encode(), b"x-api-key": b"key-2", b"authorization": b"Bearer key-1"}, (JWT, "key-2")),
    ({b"x-authorization": b"not-a-jwt", b"authorization": b"Bearer key-1"}, (None, "key-1")),
    ({b"authorization": JWT.encode(), b"x-authorization": b"eyJother"}, (JWT, None)),  # Authorization first
])
def test_the_credential_rule(headers: dict[bytes, bytes], expected: tuple[str | None, str | None]) -> None:
    assert chatgpt_credentials({"headers": list(headers.items())}) == expected
