"""A conversation's access tokens never reach a client in the clear: sealed under a key derived
from the cookies it was created with (a pool account's configured ones, or the caller's)."""

from __future__ import annotations

import time
from unittest import mock

import orjson
import pytest

from libs.bing.config import BingAccount
from libs.bing.conversation import Conversation
from libs.errors import InvalidRequest
from services.sydney_worker.sealing import TTL, Sealer

ALICE = BingAccount("alice", {"_U": "sandbox-u-alice", "KievRPSSecAuth": "kiev-alice-0123456789"})
BOB = BingAccount("bob", {"_U": "sandbox-u-bob"})
CONVERSATION = Conversation("51D|BingProd|C1", "914800962251629", "body-signature-xyz",
                            "sec-access-token-abc+/=", "bearer-token-def")
CALLER = {"_U": "callers-own-u-cookie", "SRCHHPGUSR": "x1"}


def test_a_sealed_conversation_shows_no_token_and_opens_on_any_replica() -> None:
    handed = Sealer([ALICE, BOB]).seal(CONVERSATION, "alice", None)
    text = orjson.dumps(handed).decode()
    for secret in ("sec-access-token-abc", "bearer-token-def", "body-signature-xyz", "sandbox-u-alice", "kiev"):
        assert secret not in text
    assert handed["conversationId"] == CONVERSATION.conversation_id and handed["clientId"] == CONVERSATION.client_id
    assert handed["secAccessToken"].startswith("sy1.alice.") and handed["bearerToken"] == ""
    # another replica: its own Sealer over the same configured accounts
    resume = Sealer([BOB, ALICE]).open(handed, None)
    assert resume is not None and resume.account == "alice" and resume.conversation == CONVERSATION
    assert resume.handed == handed  # handed back as it came: not sealed afresh (its TTL runs from creation)


def test_a_conversation_on_the_callers_cookies_needs_the_same_cookies() -> None:
    sealer = Sealer([ALICE])
    handed = sealer.seal(CONVERSATION, None, CALLER)
    assert handed["secAccessToken"].startswith("sy1.-.")
    reordered = dict(reversed(list(CALLER.items())))
    resume = sealer.open(handed, reordered)
    assert resume is not None and resume.account is None and resume.conversation == CONVERSATION
    for cookies, says in [(None, "send the same ones"), ({"_U": "someone-else-entirely"}, "does not open")]:
        with pytest.raises(InvalidRequest, match=says) as refused:
            sealer.open(handed, cookies)
        assert refused.value.code == "invalid_conversation" and refused.value.param == "conversation"


@pytest.mark.parametrize("change", ["tamper", "other account", "gone account", "swapped id", "expired"])
def test_a_token_that_does_not_open_is_a_400(change: str) -> None:
    sealer = Sealer([ALICE, BOB])
    handed = sealer.seal(CONVERSATION, "alice", None)
    now = time.time()
    if change == "tamper":
        handed["secAccessToken"] = handed["secAccessToken"][:-8] + "AAAAAAAA"
    elif change == "other account":
        handed["secAccessToken"] = handed["secAccessToken"].replace("sy1.alice.", "sy1.bob.")
    elif change == "gone account":
        handed["secAccessToken"] = handed["secAccessToken"].replace("sy1.alice.", "sy1.zed.")
    elif change == "swapped id":
        handed["conversationId"] = "51D|BingProd|C2"
    else:
        now += TTL + 120
    with mock.patch("time.time", return_value=now), pytest.raises(InvalidRequest) as refused:
        sealer.open(handed, None)
    assert refused.value.code == "invalid_conversation"


def test_an_unsealed_conversation_runs_as_given_on_the_callers_cookies_only() -> None:
    plain = CONVERSATION.to_json()
    resume = Sealer([ALICE]).open(plain, CALLER)
    assert resume is not None and resume.account is None and resume.conversation == CONVERSATION
    with pytest.raises(InvalidRequest, match="not created by this gateway"):
        Sealer([ALICE]).open(plain, None)


@pytest.mark.parametrize("value", [None, {}, {"conversationId": ""}, {"conversationId": None, "clientId": "x"}])
def test_no_conversation_id_is_a_new_conversation(value: object) -> None:
    assert Sealer([ALICE]).open(value, None) is None


@pytest.mark.parametrize("value", ["text", [1], {"conversationId": "C", "clientId": 5}])
def test_a_malformed_conversation_is_a_400(value: object) -> None:
    with pytest.raises(InvalidRequest) as refused:
        Sealer([ALICE]).open(value, CALLER)
    assert refused.value.param == "conversation"
