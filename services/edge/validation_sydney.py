"""Validation of SydneyQt's web API (seed 000): its JSON bodies, an upload's image, the caller's cookies.

SydneyQt's Go server decoded its bodies with `encoding/json`: a key matches a field whatever its
case (`Prompt`, `PROMPT`), and unknown keys are ignored. `fold_keys` does the same for the known
fields (a later spelling wins, as Go's decoder overwrote), so the tables below see each field under
its canonical name and the job carries nothing else. Then the edge's own rules apply: what the
gateway or the worker acts on is checked strictly, an explicit null is an absent field, and each
400 names its field (`param`). The tables use validation.py's rule factories, so the OpenAPI
document is generated from what is checked here, as for the other routes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.types import Scope

from libs.errors import InvalidRequest
from services.edge.asgi_io import header
from services.edge.validation import (
    Required,
    Rule,
    Schema,
    Table,
    array,
    boolean,
    choice,
    described,
    obj,
    pattern,
    string,
    table_schema,
)

Body = dict[str, Any]

# job.json's bound on `cookies`: a Bing cookie string is a few KiB
MAX_COOKIES = 32768
STYLES = ("Creative", "Balanced", "Precise")
PLUGINS = ("Suno",)  # SydneyQt's only plugin
_STYLE_OF = {style.lower(): style for style in STYLES}


def _cookies(value: Any, path: str) -> None:
    string()(value, path)
    if len(value) > MAX_COOKIES:
        raise InvalidRequest(f"'{path}' must be at most {MAX_COOKIES} characters, got {len(value)}.", param=path,
                             code="invalid_value")


COOKIES = described(_cookies, {"type": "string", "maxLength": MAX_COOKIES,
                               "description": "the caller's own Bing cookies (document.cookie); never logged"})
_URL = r"[Hh][Tt][Tt][Pp][Ss]?://[^\s/?#]+\S*"
URL = pattern(_URL, "an http or https URL")
URL_OR_EMPTY = pattern(f"(?:{_URL})?", "an http or https URL (or empty: no image)")


def _ignoring_case(word: str) -> str:
    """`word` as a regular expression of any case (JSON Schema's patterns have no flags)."""
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in word)


def _style(value: Any, path: str) -> None:
    string()(value, path)
    if value and value.lower() not in _STYLE_OF:
        raise InvalidRequest(
            f"'{path}' must be one of {', '.join(STYLES)} (any case; empty means Creative), got {value[:64]!r}.",
            param=path, code="invalid_value",
        )


_STYLE = described(_style, {"type": "string",
                            "pattern": f"^(?:|{'|'.join(_ignoring_case(s) for s in STYLES)})$",
                            "description": "any case; empty or absent: Creative"})


def canonical_style(value: str | None) -> str:
    """The style's canonical name (a checked value; empty or absent is Creative, as SydneyQt had it)."""
    return _STYLE_OF[value.lower()] if value else STYLES[0]


CHAT_STREAM_FIELDS: Table = {
    "prompt": Required(string(non_empty=True)),
    "context": string(),
    "cookies": COOKIES,
    "imageUrl": URL_OR_EMPTY,
    "noSearch": boolean(),
    "conversationStyle": _STYLE,
    "gpt4turbo": boolean(),
    "classic": boolean(),
    "plugins": array(choice(*PLUGINS)),
    "conversation": obj(),  # the worker checks its fields (a conversation it continues)
}

GENERATIVE_IMAGE_FIELDS: Table = {
    "text": Required(string(non_empty=True)),
    "url": Required(URL),  # the worker checks that it points at Bing's image creator
}
IMAGE_CREATE_FIELDS: Table = {
    "image": Required(obj(GENERATIVE_IMAGE_FIELDS)),
    "cookies": COOKIES,
}

# body name (an OpenAPI component) -> its table
SYDNEY_BODIES: dict[str, Table] = {
    "SydneyChatStreamRequest": CHAT_STREAM_FIELDS,
    "SydneyImageCreateRequest": IMAGE_CREATE_FIELDS,
}
_RULES: dict[str, Rule] = {name: obj(table) for name, table in SYDNEY_BODIES.items()}
_NESTED: dict[str, dict[str, Table]] = {"SydneyImageCreateRequest": {"image": GENERATIVE_IMAGE_FIELDS}}
_KEYS: dict[int, dict[str, str]] = {id(table): {name.lower(): name for name in table}
                                    for table in (CHAT_STREAM_FIELDS, GENERATIVE_IMAGE_FIELDS, IMAGE_CREATE_FIELDS)}


def fold_keys(body: Mapping[str, Any], table: Table) -> Body:
    """The table's fields of `body`, each under its canonical name, matched whatever the key's case;
    other keys are dropped (Go's decoder ignored them)."""
    names = _KEYS[id(table)]
    folded: Body = {}
    for key, value in body.items():
        name = names.get(key.lower())
        if name is not None:
            folded[name] = value
    return folded


def validate_sydney_body(name: str, body: Body) -> Body:
    """The body of `name` (SYDNEY_BODIES) with its keys folded and checked; raises `InvalidRequest`
    naming the first field at fault."""
    folded = fold_keys(body, SYDNEY_BODIES[name])
    for field, table in _NESTED.get(name, {}).items():
        if type(folded.get(field)) is dict:
            folded[field] = fold_keys(folded[field], table)
    _RULES[name](folded, "")
    return folded


def sydney_body_schema(name: str) -> Schema:
    schema = table_schema(SYDNEY_BODIES[name])
    schema["description"] = ("Keys are matched whatever their case (as SydneyQt's Go decoder did); unknown keys are "
                             "ignored.")
    return schema


def caller_cookies(value: str | None, where: str, param: str | None) -> str | None:
    """The caller's cookies for a job (None when empty), within job.json's bound."""
    if not value:
        return None
    if len(value) > MAX_COOKIES:
        raise InvalidRequest(f"{where} must be at most {MAX_COOKIES} characters, got {len(value)}.", param=param,
                             code="invalid_value")
    return value


def header_cookies(scope: Scope, features: frozenset[str]) -> str | None:
    """The caller's Cookie header (the first) for a job of a pool that uses it (feature `cookies`:
    SydneyQt's OpenAI routes took the caller's Bing cookies so); None for every other pool, which
    must never see them. The header is looked up only for such a pool."""
    if "cookies" not in features:
        return None
    raw = header(scope, b"cookie")
    if not raw:
        return None
    try:
        value = raw.decode()
    except UnicodeDecodeError:
        value = raw.decode("latin-1")
    return caller_cookies(value, "The Cookie header", None)


# ---- an uploaded image, by its magic bytes ----------------------------------------------------------


def sniff_image(data: bytes) -> str | None:
    """The content type of a PNG, JPEG, GIF or WEBP image by its first bytes; None for anything else."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if len(data) >= 12 and data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "image/webp"
    return None


# ---- the worker's results (proto/schemas/v1/sydney_result.json, bing_image_result.json) ------------


def is_sydney_result(body: Mapping[str, Any]) -> bool:
    url = body.get("url")
    return type(url) is str and bool(url) and body.keys() == {"url"}


def is_bing_image_result(body: Mapping[str, Any]) -> bool:
    urls, duration = body.get("image_urls"), body.get("duration")
    return (body.keys() == {"text", "url", "image_urls", "duration"}
            and type(body["text"]) is str and type(body["url"]) is str
            and type(urls) is list and bool(urls) and all(type(u) is str for u in urls)
            and type(duration) is int and duration >= 0)
