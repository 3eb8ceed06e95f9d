"""A Bing conversation handed to a client without its access tokens in the clear.

`secAccessToken` (the ChatHub `sec_access_token`), `bearerToken` and the body's
`conversationSignature` let whoever holds them talk in that conversation as its account. The
`conversation` a client gets back keeps `conversationId` and `clientId` readable and carries all
three sealed in `secAccessToken` as `sy1.<owner>.<Fernet token>` (the clear ones are ""):
- owner: the pool account the conversation was created on, or `-` for the caller's own cookies;
- the Fernet key is derived (HKDF-SHA256, a fixed label) from the cookies it was created with:
  the account's CONFIGURED cookies (every replica holds them, so any replica opens it), or the
  caller's cookies (they must send the same cookies to continue it);
- the token expires with Bing's conversations (6 h after it was created: a continued turn hands
  the same sealed value back, it is not sealed afresh).
A conversation whose `secAccessToken` is not sealed is one the client made with their own cookies
(as SydneyQt's users did): it runs as given, on the cookies the caller sends.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from libs.bing.config import BingAccount
from libs.bing.conversation import Conversation
from libs.errors import InvalidRequest

PREFIX = "sy1"
CALLER = "-"  # the owner of a conversation made on the caller's own cookies
TTL = 6 * 3600  # seconds: Bing's conversations expire after 06:00:00 (fact sheet §5)
_LABEL = b"switchyard sydney conversation v1"


def _key(cookies: Mapping[str, str]) -> Fernet:
    # sorted: the same cookies in another order (a caller's client reorders them) open it too
    material = "; ".join(f"{k}={v}" for k, v in sorted(cookies.items())).encode()
    raw = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_LABEL).derive(material)
    return Fernet(base64.urlsafe_b64encode(raw))


def invalid(message: str) -> InvalidRequest:
    return InvalidRequest(message, param="conversation", code="invalid_conversation")


@dataclass(frozen=True)
class Resume:
    """A conversation a client asked to continue: its clear tokens, whose cookies it runs on (a
    pool account's name, or None for the caller's), and the JSON to hand back after the turn."""

    conversation: Conversation
    account: str | None
    handed: dict[str, Any]


class Sealer:
    def __init__(self, accounts: Iterable[BingAccount]) -> None:
        self._keys = {a.name: _key(a.cookies) for a in accounts}  # derived once: every turn uses one

    def seal(self, conversation: Conversation, account: str | None,
             caller_cookies: Mapping[str, str] | None) -> dict[str, Any]:
        """The CreateConversationResponse a client gets: ids readable, tokens sealed."""
        if account is not None:
            fernet = self._keys[account]
        else:
            assert caller_cookies is not None, "a conversation is made on an account or on the caller's cookies"
            fernet = _key(caller_cookies)
        secret = {"s": conversation.sec_access_token, "b": conversation.bearer_token or "",
                  "g": conversation.signature or "", "i": conversation.conversation_id, "c": conversation.client_id}
        token = fernet.encrypt(orjson.dumps(secret)).decode()
        return {"conversationId": conversation.conversation_id, "clientId": conversation.client_id,
                "result": {"value": "Success", "message": None},
                "secAccessToken": f"{PREFIX}.{account or CALLER}.{token}", "conversationSignature": "",
                "bearerToken": ""}

    def open(self, value: Any, caller_cookies: Mapping[str, str] | None) -> Resume | None:
        """The conversation a request names, None for a new one (no conversation, or an empty
        `conversationId`, as SydneyQt read it); 400 invalid_conversation when it cannot be used."""
        if value is None:
            return None
        if not isinstance(value, dict):
            raise invalid("conversation must be an object (a CreateConversationResponse)")
        if not value.get("conversationId"):
            return None
        try:
            given = Conversation.from_json(value)
        except ValueError as exc:
            raise invalid(str(exc)) from None
        parts = given.sec_access_token.split(".", 2)
        if len(parts) != 3 or parts[0] != PREFIX:
            if caller_cookies is None:
                raise invalid("this conversation was not created by this gateway: continue it with the "
                              "cookies it was created with (the Cookie header)")
            return Resume(given, None, given.to_json())
        owner, token = parts[1], parts[2]
        if owner == CALLER:
            if caller_cookies is None:
                raise invalid("this conversation was created on your own cookies; send the same ones to continue it")
            fernet = _key(caller_cookies)
        elif owner in self._keys:
            fernet = self._keys[owner]
        else:
            raise invalid("the account this conversation was created on is no longer configured")
        try:
            secret = orjson.loads(fernet.decrypt(token, ttl=TTL))
        except (InvalidToken, orjson.JSONDecodeError):
            raise invalid("the conversation's token does not open: it expired (6 h), was altered, or the "
                          "cookies differ from those it was created with") from None
        if not isinstance(secret, dict) or secret.get("i") != given.conversation_id:
            raise invalid("the conversation's token belongs to another conversation")
        conversation = Conversation(conversation_id=given.conversation_id, client_id=str(secret.get("c") or ""),
                                    signature=str(secret.get("g") or "") or None,
                                    sec_access_token=str(secret.get("s") or ""),
                                    bearer_token=str(secret.get("b") or "") or None)
        return Resume(conversation, None if owner == CALLER else owner, given.to_json())
