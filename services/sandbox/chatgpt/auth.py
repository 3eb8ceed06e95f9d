"""Access tokens and session cookies of the ChatGPT web fake (fact sheet §1.2, §1.3).

Tokens are JWT-shaped with the exact RS256 header real ones carry (so they start `eyJhbGciOiJSUzI1NiI`,
the prefix clients recognise), but are signed with HMAC-SHA256 under a per-process random secret: the
fake accepts only tokens it minted itself, and a restarted fake refuses the old ones as forged.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson

SESSION_COOKIE = "__Secure-next-auth.session-token"
SESSION_PREFIX = "sandbox-session-"  # `sandbox-session-<user>` is that user's session, no control call needed
USER_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
_HEADER = base64.urlsafe_b64encode(b'{"alg":"RS256","typ":"JWT"}').rstrip(b"=")
_PROFILE = "https://api.openai.com/profile"
_AUTH = "https://api.openai.com/auth"
_SESSION_LIFETIME = timedelta(days=30)  # the session JSON's `expires`; the fake never enforces it


def user_id(user: str) -> str:
    return f"user-{user}"


def email(user: str) -> str:
    return f"{user}@sandbox.invalid"


def valid_user(user: object) -> bool:
    return isinstance(user, str) and USER_PATTERN.match(user) is not None


def _b64(raw: bytes) -> bytes:
    return base64.urlsafe_b64encode(raw).rstrip(b"=")


def _unb64(text: bytes) -> bytes:
    return base64.urlsafe_b64decode(text + b"=" * (-len(text) % 4))


class Tokens:
    """Mints and checks access tokens; revocation remembers the signatures it killed."""

    def __init__(self, ttl: int) -> None:
        self.ttl = ttl
        self._secret = secrets.token_bytes(32)
        self._live: dict[str, list[bytes]] = {}  # user -> signatures minted since the last revoke
        self._revoked: set[bytes] = set()

    def mint(self, user: str, ttl: int | None = None) -> tuple[str, int]:
        """A token for `user` and its `exp`. A ttl <= 0 mints an already expired token (tests use it)."""
        now = int(time.time())
        exp = now + (self.ttl if ttl is None else ttl)
        payload = {
            _PROFILE: {"email": email(user), "email_verified": True},
            _AUTH: {"user_id": user_id(user)},
            "iss": "https://auth0.openai.com/",
            "sub": f"auth0|{user}",
            "aud": ["https://api.openai.com/v1", "https://openai.openai.auth0app.com/userinfo"],
            "iat": now,
            "exp": exp,
            "azp": "TdJIcbe16WoTHtN95nyywh5E4yOo6ItG",
            "scope": "openid email profile model.read model.request organization.read offline_access",
            "jti": secrets.token_hex(8),  # two tokens minted in the same second still differ
        }
        signing_input = _HEADER + b"." + _b64(orjson.dumps(payload))
        signature = _b64(hmac.new(self._secret, signing_input, hashlib.sha256).digest())
        self._live.setdefault(user, []).append(signature)
        return (signing_input + b"." + signature).decode(), exp

    def check(self, authorization: bytes | None) -> tuple[str | None, str | None]:
        """(user, None) for a good token, else (None, why) with why in missing | forged | expired."""
        if authorization is None or authorization[:7].lower() != b"bearer ":
            return None, "missing"
        parts = authorization[7:].strip().split(b".")
        if len(parts) != 3 or parts[0] != _HEADER:
            return None, "forged"
        expected = _b64(hmac.new(self._secret, parts[0] + b"." + parts[1], hashlib.sha256).digest())
        if not hmac.compare_digest(expected, parts[2]):
            return None, "forged"
        claims = orjson.loads(_unb64(parts[1]))  # ours, so well-formed
        if parts[2] in self._revoked or claims["exp"] <= time.time():
            return None, "expired"
        return str(claims[_AUTH]["user_id"]).removeprefix("user-"), None

    def revoke(self, user: str) -> int:
        """Every token of `user` minted so far now answers token_expired; how many that was."""
        killed = self._live.pop(user, [])
        self._revoked.update(killed)
        return len(killed)



@dataclass(slots=True)
class _Session:
    user: str
    rotate: bool
    uses_left: int | None = None  # None: valid until rotated away; then 1 more use


class Sessions:
    """Session cookie values -> users. A rotating session answers every use with a new value; the value
    it replaced stays good for exactly one more use (a client that lost the race to store the new one)."""

    def __init__(self) -> None:
        self._by_value: dict[str, _Session] = {}
        self._blocked: set[str] = set()  # users whose sessions were revoked: `sandbox-session-<user>` too

    def register(self, user: str, rotate: bool) -> str:
        self._blocked.discard(user)
        value = "sbxsess." + secrets.token_urlsafe(32)  # not `sandbox-session-*`, not `sk-`, not `eyJ`
        self._by_value[value] = _Session(user, rotate)
        return value

    def resolve(self, value: str) -> tuple[str | None, str | None]:
        """(user, rotated value or None) for a good cookie value, (None, None) otherwise."""
        session = self._by_value.get(value)
        if session is None:
            user = value.removeprefix(SESSION_PREFIX)
            if value.startswith(SESSION_PREFIX) and valid_user(user) and user not in self._blocked:
                return user, None
            return None, None
        if session.uses_left is not None:
            session.uses_left -= 1
            if session.uses_left <= 0:
                del self._by_value[value]
        if not session.rotate:
            return session.user, None
        if session.uses_left is None:
            session.uses_left = 1
        return session.user, self.register(session.user, rotate=True)

    def revoke(self, user: str) -> None:
        for value in [v for v, s in self._by_value.items() if s.user == user]:
            del self._by_value[value]
        self._blocked.add(user)

    def reset(self) -> None:
        self._by_value.clear()
        self._blocked.clear()


def session_cookie(cookie_header: bytes | None) -> str | None:
    if cookie_header is None:
        return None
    for item in cookie_header.decode("latin-1").split(";"):
        name, sep, value = item.strip().partition("=")
        if sep and name == SESSION_COOKIE:
            return value
    return None


def session_json(user: str, token: str) -> dict[str, object]:
    """The logged-in body of GET /api/auth/session (§1.3)."""
    now = datetime.now(UTC)
    expires = (now + _SESSION_LIFETIME).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {
        "user": {
            "id": user_id(user), "name": email(user), "email": email(user),
            "image": "https://sandbox.invalid/avatar.png", "picture": "https://sandbox.invalid/avatar.png",
            "idp": "auth0", "iat": int(now.timestamp()), "mfa": False, "groups": [],
            "intercom_hash": hashlib.sha256(user.encode()).hexdigest(),
        },
        "expires": expires,
        "accessToken": token,
        "authProvider": "auth0",
    }


def rotated_cookie(value: str, https: bool) -> bytes:
    """The Set-Cookie of a rotated session. `Secure` only over HTTPS (as the real site is): a client's
    cookie jar would otherwise never send it back to a plain-HTTP sandbox, a failure reality lacks."""
    max_age = int(_SESSION_LIFETIME.total_seconds())
    secure = "; Secure" if https else ""
    return f"{SESSION_COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly{secure}; SameSite=Lax".encode()
