"""The ChatGPT web fake's tokens, sessions and settings, in process (the HTTP side is in
tests/integration/test_sandbox_chatgpt.py)."""

from __future__ import annotations

import pytest

from services.sandbox.chatgpt.auth import Sessions, Tokens, session_cookie
from services.sandbox.config import DEFAULT_CHATGPT_MODELS, Settings


def bearer(token: str) -> bytes:
    return b"Bearer " + token.encode()


def test_tokens_check_signature_expiry_and_revocation() -> None:
    tokens = Tokens(60)
    token, _ = tokens.mint("alice")
    assert token.startswith("eyJhbGciOiJSUzI1NiI")
    assert tokens.check(bearer(token)) == ("alice", None)
    assert tokens.check(None) == (None, "missing")
    assert tokens.check(b"Basic abc") == (None, "missing")
    assert Tokens(60).check(bearer(token)) == (None, "forged")  # another process's secret
    assert tokens.check(bearer(token + "x")) == (None, "forged")
    assert tokens.check(bearer(tokens.mint("alice", ttl=0)[0])) == (None, "expired")
    other, _ = tokens.mint("bob")
    assert tokens.revoke("alice") == 2
    assert tokens.check(bearer(token)) == (None, "expired")
    assert tokens.check(bearer(other)) == ("bob", None)
    assert tokens.check(bearer(tokens.mint("alice")[0])) == ("alice", None)


def test_sessions_named_registered_rotated_and_revoked() -> None:
    sessions = Sessions()
    assert sessions.resolve("sandbox-session-carol") == ("carol", None)
    assert sessions.resolve("sandbox-session-") == (None, None)
    assert sessions.resolve("whatever") == (None, None)
    plain = sessions.register("dave", rotate=False)
    assert sessions.resolve(plain) == ("dave", None) and sessions.resolve(plain) == ("dave", None)
    old = sessions.register("erin", rotate=True)
    user, new = sessions.resolve(old)
    assert user == "erin" and new is not None and new != old
    assert sessions.resolve(old)[0] == "erin"  # one more use
    assert sessions.resolve(old) == (None, None)
    assert sessions.resolve(new)[0] == "erin"
    sessions.revoke("carol")
    assert sessions.resolve("sandbox-session-carol") == (None, None)


def test_session_cookie_is_found_among_others() -> None:
    header = b"_puid=abc; __Secure-next-auth.session-token=v1.x; cf_clearance=z"
    assert session_cookie(header) == "v1.x"
    assert session_cookie(b"_puid=abc") is None and session_cookie(None) is None


def test_settings_read_the_chatgpt_env() -> None:
    default = Settings.from_env({})
    assert default.chatgpt_models == DEFAULT_CHATGPT_MODELS and default.chatgpt_token_ttl == 3600
    custom = Settings.from_env({"SANDBOX_CHATGPT_MODELS": "auto, o1", "SANDBOX_CHATGPT_TOKEN_TTL": "90"})
    assert custom.chatgpt_models == ("auto", "o1") and custom.chatgpt_token_ttl == 90
    with pytest.raises(ValueError, match="SANDBOX_CHATGPT_TOKEN_TTL"):
        Settings.from_env({"SANDBOX_CHATGPT_TOKEN_TTL": "0"})
