"""What SydneyQt puts around its requests (fact sheet sydney.md §2.1-2.2, §6.1): the ChatHub URL
with its `sec_access_token`, and the Edge-like header set of the websocket upgrade. The random
parts (sec-ms-gec, the request id, x-forwarded-for) are fresh per call.
"""

from __future__ import annotations

import random
import secrets
import uuid
from collections.abc import Mapping
from urllib.parse import quote

from libs.bing.cookies import format_cookies

EDGE_USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/113.0.0.0 Safari/537.36 Edg/113.0.1774.50"
)
CHAT_REFERER = "https://www.bing.com/search?q=Bing+AI&showconv=1"
KBLOB_REFERER = "https://www.bing.com/search?q=Bing+AI&showconv=1&FORM=hpcodx"

_STATIC_UPGRADE_HEADERS = (
    ("accept", "application/json"),
    ("accept-language", "en-US,en;q=0.9"),
    ("content-type", "application/json"),
    ("sec-ch-ua", '"Microsoft Edge";v="113", "Chromium";v="113", "Not-A.Brand";v="24"'),
    ("sec-ch-ua-arch", '"x86"'),
    ("sec-ch-ua-bitness", '"64"'),
    ("sec-ch-ua-full-version", '"113.0.1774.50"'),
    (
        "sec-ch-ua-full-version-list",
        '"Microsoft Edge";v="113.0.1774.50", "Chromium";v="113.0.5672.127", "Not-A.Brand";v="24.0.0.0"',
    ),
    ("sec-ch-ua-mobile", "?0"),
    ("sec-ch-ua-model", '""'),
    ("sec-ch-ua-platform", '"Windows"'),
    ("sec-ch-ua-platform-version", '"15.0.0"'),
    ("sec-fetch-dest", "empty"),
    ("sec-fetch-mode", "cors"),
    ("sec-fetch-site", "same-origin"),
    ("sec-ms-gec-version", "1-115.0.1866.1"),
    ("x-ms-useragent", "azsdk-js-api-client-factory/1.0.0-beta.1 core-rest-pipeline/1.10.0 OS/Win32"),
    ("Referer", CHAT_REFERER),
    ("Referrer-Policy", "origin-when-cross-origin"),
)


def chathub_url(base: str, sec_access_token: str) -> str:
    """`base?sec_access_token=<token>`, encoded like Go's QueryEscape for every character a token
    holds (`+` → %2B, `/` → %2F, `=` → %3D); no parameter at all for an empty token."""
    if not sec_access_token:
        return base
    return f"{base}{'&' if '?' in base else '?'}sec_access_token={quote(sec_access_token, safe='')}"


def upgrade_headers(cookies: Mapping[str, str]) -> list[tuple[str, str]]:
    """The upgrade request's headers, Cookie last. User-Agent is not in the list: the websocket
    client sets it from EDGE_USER_AGENT (a second one would be sent twice)."""
    headers = list(_STATIC_UPGRADE_HEADERS)
    headers.append(("sec-ms-gec", secrets.token_hex(32)))
    headers.append(("x-ms-client-request-id", str(uuid.uuid4())))
    headers.append(("x-forwarded-for", f"1.0.0.{random.randint(1, 255)}"))
    # Always present, even empty, as SydneyQt sends it.
    headers.append(("Cookie", format_cookies(cookies)))
    return headers
