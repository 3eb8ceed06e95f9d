"""conversation/create answers parsed without I/O, and the CreateConversationResponse JSON form
(sydney.md §1.3-1.4)."""

from __future__ import annotations

from typing import Any

import pytest

from libs.bing.conversation import Conversation, CreateFailed, parse_create

TOKEN = "enc+rypted/sig=="
BEARER = "plain-signature-secret"
BODY = (
    b'{"conversationId":"51D|BingProd|6033","clientId":"914800962251629","result":{"value":"Success","message":null}}'
)
HEADERS = {"x-sydney-encryptedconversationsignature": TOKEN, "X-SYDNEY-CONVERSATIONSIGNATURE": BEARER}


def test_success_takes_the_tokens_from_headers_case_insensitively() -> None:
    conversation = parse_create(200, HEADERS, BODY)
    assert conversation == Conversation("51D|BingProd|6033", "914800962251629", None, TOKEN, BEARER)
    assert TOKEN not in repr(conversation)
    assert BEARER not in repr(conversation)


def test_body_signature_and_missing_headers() -> None:
    body = b'{"conversationId":"c","clientId":"p","conversationSignature":"S","result":{"value":"Success"}}'
    assert parse_create(200, {}, body) == Conversation("c", "p", "S", "", None)


def test_non_200_is_sydneyqts_text() -> None:
    with pytest.raises(CreateFailed) as caught:
        parse_create(403, HEADERS, b'{"result":{"value":"UnauthorizedRequest","message":"m"}}')
    assert (caught.value.status, caught.value.value) == (403, "HTTP 403")
    assert caught.value.message == (
        "failed to create the conversation, code: 403; please check your proxy settings and your account"
    )
    assert str(caught.value) == caught.value.message


def test_result_not_success() -> None:
    body = b'{"conversationId":"","clientId":"","result":{"value":"UnauthorizedRequest","message":"Unauthorized"}}'
    with pytest.raises(CreateFailed) as caught:
        parse_create(200, HEADERS, body)
    assert (caught.value.status, caught.value.value) == (200, "UnauthorizedRequest")
    assert caught.value.message == "failed to create the conversation: message: Unauthorized"


@pytest.mark.parametrize(
    "body",
    [
        b"<html>blocked</html>",
        b"[]",
        b"{}",
        b'{"result":{"value":""}}',
        b'{"conversationId":"c","result":{"value":"Success"}}',
        b'{"conversationId":5,"clientId":"p","result":{"value":"Success"}}',
        b'{"conversationId":"c","clientId":"p","conversationSignature":1,"result":{"value":"Success"}}',
    ],
)
def test_malformed(body: bytes) -> None:
    with pytest.raises(CreateFailed) as caught:
        parse_create(200, HEADERS, body)
    assert caught.value.value == "Malformed"
    assert TOKEN not in str(caught.value)
    assert BEARER not in str(caught.value)


def test_to_json_is_the_create_conversation_response_shape_and_round_trips() -> None:
    conversation = parse_create(200, HEADERS, BODY)
    assert conversation.to_json() == {
        "conversationId": "51D|BingProd|6033",
        "clientId": "914800962251629",
        "result": {"value": "Success", "message": None},
        "secAccessToken": TOKEN,
        "conversationSignature": "",
        "bearerToken": BEARER,
    }
    assert Conversation.from_json(conversation.to_json()) == conversation
    bare = Conversation("c", "p", "sig", "", None)
    assert Conversation.from_json(bare.to_json()) == bare


def test_from_json_is_lenient_on_missing_optionals() -> None:
    assert Conversation.from_json({"conversationId": "c", "clientId": "p"}) == Conversation("c", "p", None, "", None)
    assert Conversation.from_json(
        {"conversationId": "c", "clientId": "p", "bearerToken": None, "secAccessToken": None}
    ) == Conversation("c", "p", None, "", None)


@pytest.mark.parametrize(
    ("obj", "field"),
    [
        ([], "object"),
        ({"clientId": "p"}, "conversationId"),
        ({"conversationId": "c", "clientId": ""}, "clientId"),
        ({"conversationId": "c", "clientId": "p", "secAccessToken": ["secret-token-value"]}, "secAccessToken"),
        ({"conversationId": "c", "clientId": "p", "bearerToken": 7}, "bearerToken"),
        ({"conversationId": "c", "clientId": "p", "conversationSignature": {}}, "conversationSignature"),
    ],
)
def test_from_json_names_the_bad_field_not_its_value(obj: Any, field: str) -> None:
    with pytest.raises(ValueError, match=field) as caught:
        Conversation.from_json(obj)
    assert "secret-token-value" not in str(caught.value)
