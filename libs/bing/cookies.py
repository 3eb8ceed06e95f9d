"""Bing account cookies: parsed from a `Cookie`-style string or a browser export, formatted for
the `Cookie` header, and updated from `Set-Cookie` answers (fact sheet sydney.md §1.2, §9.2).

SydneyQt's webapi `ParseCookies` split each piece on every `=` and kept only two-part pieces, so a
value containing `=` (base64 padding, common in `_U`/`KievRPSSecAuth`) was dropped, and it did not
trim, so `a=1; b=2` gave the key ` b`. Here a piece is partitioned on its FIRST `=` and both
sides are trimmed. Errors never quote the text: it is made of credentials.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson


def _header_safe(text: str) -> bool:
    """Printable ASCII (and tab) only: anything else either fails deep inside the HTTP client
    (httpx and websockets encode header values as ASCII) or, for CR/LF, would split the header."""
    return text.isascii() and text.replace("\t", " ").isprintable()


def parse_cookies(text: str) -> dict[str, str]:
    """`a=1; b=x=y` → {"a": "1", "b": "x=y"}; a JSON array of `{name, value}` (cookies.json, a
    browser export) when the text starts with `[`. Empty text is no cookies (an anonymous account).
    Raises ValueError for anything else, with a message that does not quote the text."""
    stripped = text.strip()
    if not stripped:
        return {}
    cookies = _from_export(stripped) if stripped.startswith("[") else _from_header(stripped)
    for key, value in cookies.items():
        if not (_header_safe(key) and _header_safe(value)):
            raise ValueError("cookies: a cookie name or value holds a control or non-ASCII character")
    return cookies


def _from_header(text: str) -> dict[str, str]:
    cookies: dict[str, str] = {}
    for piece in text.split(";"):
        key, sep, value = piece.partition("=")
        key = key.strip()
        if sep and key:
            cookies[key] = value.strip()
    if not cookies:
        raise ValueError("cookies: expected `name=value; ...` or a JSON array of {name, value}")
    return cookies


def _from_export(text: str) -> dict[str, str]:
    try:
        entries: Any = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise ValueError("cookies: text starting with '[' is not valid JSON") from None
    if not isinstance(entries, list):  # pragma: no cover - '[' always decodes to a list
        raise ValueError("cookies: expected a JSON array of {name, value}")
    cookies: dict[str, str] = {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ValueError(f"cookies: entry {index} is not an object")
        name, value = entry.get("name"), entry.get("value")
        if not isinstance(name, str) or not isinstance(value, str):
            raise ValueError(f"cookies: entry {index} needs string `name` and `value`")
        name = name.strip()
        if name:
            cookies[name] = value.strip()
    return cookies


def format_cookies(cookies: Mapping[str, str]) -> str:
    """`k=v; k2=v2` in insertion order (SydneyQt's trailing `; ` is left off)."""
    return "; ".join(f"{key}={value}" for key, value in cookies.items())


def merged_set_cookies(cookies: Mapping[str, str], set_cookie_headers: Sequence[str]) -> dict[str, str]:
    """A new dict: `cookies` with each Set-Cookie's `name=value` (up to its first `;`; the value may
    contain `=`) merged in, as SydneyQt's `UpdateModifiedCookies` does. Attributes (Path,
    Expires, ...) are ignored: the map is what the next request sends. A pair that could not be
    sent back in a header (control or non-ASCII characters) is skipped."""
    merged = dict(cookies)
    for header in set_cookie_headers:
        name, sep, value = header.split(";", 1)[0].partition("=")
        name = name.strip()
        value = value.strip()
        if sep and name and _header_safe(name) and _header_safe(value):
            merged[name] = value
    return merged
