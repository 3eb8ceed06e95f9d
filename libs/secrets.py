"""The one place secrets are scrubbed from text: every credential this process holds, verbatim,
and anything that looks like one (patterns).

Patterns alone miss keys without a recognisable shape (a 32-hex Azure key, `gsk_…`, `AIza…`,
`hf_…`, `xai-…`), and upstreams echo the key they got in error bodies ("Request used API key:
…"). So whatever credential a worker loads (API keys, proxy or URL credentials; cookies and access
tokens the same way) is registered here with `hold`, and `scrub` replaces each held value
verbatim, plus its URL-encoded form, before the patterns run. Callers: upstream error text
(`libs/openai_upstream/call.py`), errors put on the bus (`SwitchyardError.to_wire`), and
every log line (`libs.logs.redact`).

Values shorter than MIN_SECRET_LENGTH are not held: no provider issues such keys, and scrubbing
a short word ("sandbox", "test") verbatim would mangle unrelated text (model names, messages)
in every error and log line. A short "key" is a placeholder, not a credential.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from urllib.parse import quote, unquote, urlsplit

MIN_SECRET_LENGTH = 8
MARKER = "[redacted]"

_PATTERNS = [
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]{4,}"),
    re.compile(r"\b(sk|sb|pk|rk)-[A-Za-z0-9_*.-]{6,}"),
    # a whole Cookie header value: every cookie in it is a credential
    re.compile(r"(?i)((?:set-)?cookies?[\"']?\s*[=:]\s*[\"']?)[^\"'\n}]+"),
    re.compile(
        r"(?i)([\"']?(?:api[_-]?key|access[_-]?token|refresh[_-]?token|session[_-]?token|token|secret|password"
        r"|authorization|_U)[\"']?\s*[=:]\s*[\"']?)[^\s,;\"'}]{4,}"
    ),
    re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]*"),  # JWTs
]

_held: set[str] = set()
_owned: dict[str, dict[str, set[str]]] = {}  # owner → its current secrets → their forms (hold_as)
_verbatim: re.Pattern[str] | None = None  # one alternation of every held form, longest first


def _forms(secret: str | None) -> set[str]:
    if not secret or len(secret) < MIN_SECRET_LENGTH:
        return set()
    return {secret, quote(secret, safe=""), quote(secret, safe="/:")}


def hold(secret: str | None) -> None:
    """Scrub `secret` (and its URL-encoded form) from all text from now on, process-wide."""
    global _verbatim
    forms = _forms(secret)
    if forms <= _held:
        return
    _held.update(forms)
    # Longest first: a held value that contains another is replaced whole, not around the inner one.
    _verbatim = re.compile("|".join(re.escape(s) for s in sorted(_held, key=len, reverse=True)))


def hold_as(owner: str, secrets: Iterable[str]) -> None:
    """Scrub `owner`'s current secrets from all text, in place of the ones it held before: secrets
    an upstream rotates (a web account's cookies, renewed on every conversation) stay bounded.
    They are replaced one by one in `scrub`, not compiled into its regex: they change on every
    conversation, and compiling the alternation of every secret each time cost more than the turn."""
    before = _owned.get(owner, {})
    _owned[owner] = {s: before[s] if s in before else _forms(s) for s in secrets}


def scrub_also(text: str, secrets: Iterable[str]) -> str:
    """`text` without these secrets of one call (a caller's own credentials, never held
    process-wide) and their URL-encoded forms, then `scrub`bed."""
    for secret in secrets:
        for form in sorted(_forms(secret), key=len, reverse=True):
            text = text.replace(form, MARKER)
    return scrub(text)


def hold_url(url: str | None) -> None:
    """Hold the credentials inside a URL (`http://user:pass@proxy:3128`): the password, the whole
    `user:pass`, and the Basic-auth token made of them. A user name alone is not a secret."""
    if not url or "@" not in url:
        return
    parts = urlsplit(url)
    if parts.password is None:
        hold(unquote(parts.username or ""))  # `http://token@host`: a lone user part is the credential
        return
    user, password = unquote(parts.username or ""), unquote(parts.password)
    hold(password)
    hold(f"{user}:{password}")
    hold(parts.netloc.rpartition("@")[0])  # as written in the URL (still percent-encoded)
    hold(base64.b64encode(f"{user}:{password}".encode()).decode())


def scrub(text: str) -> str:
    """`text` with every held secret and anything that looks like a credential replaced by a marker."""
    if _verbatim is not None:
        text = _verbatim.sub(MARKER, text)
    for owned in _owned.values():
        for form in sorted(set().union(*owned.values()), key=len, reverse=True):
            text = text.replace(form, MARKER)
    for pattern in _PATTERNS:
        text = pattern.sub(_keep_label, text)
    return text


def _keep_label(match: re.Match[str]) -> str:
    return (match.group(1) if match.re.groups and match.group(1) else "") + MARKER


def forget_all() -> None:
    """Tests only: an empty registry."""
    global _verbatim
    _held.clear()
    _owned.clear()
    _verbatim = None
