"""JSON text as Go's `json.Marshal` writes it, for payloads that must match SydneyQt's byte for
byte (the `Text` of its events, which its webapi forwards verbatim): compact, non-ASCII as raw
UTF-8, and `<`, `>`, `&`, U+2028, U+2029 escaped as `\\u003c`-style sequences. Those characters
only ever occur inside JSON strings, so escaping them in the encoded text is exact.
"""

from __future__ import annotations

from typing import Any

import orjson

_GO_ESCAPES = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def marshal(value: Any) -> str:
    return orjson.dumps(value).decode().translate(_GO_ESCAPES)
