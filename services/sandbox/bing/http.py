"""Small request helpers shared by the Bing fake's HTTP routes."""

from __future__ import annotations

from urllib.parse import parse_qs

from ..asgi import Scope
from . import cookies

HTML = b"text/html; charset=utf-8"


def query(scope: Scope) -> dict[str, str]:
    """The query string decoded as a form (`+` is a space): a client that does not escape shows."""
    return {k: v[-1] for k, v in parse_qs(scope["query_string"].decode("latin-1"), keep_blank_values=True).items()}


def cookie_header(scope: Scope) -> bytes | None:
    """Every Cookie header of the request joined (HTTP/1.1 clients send one; tolerate several)."""
    values = [value for name, value in scope["headers"] if name == b"cookie"]
    return b"; ".join(values) if values else None


def request_cookies(scope: Scope) -> dict[str, str]:
    return cookies.parse(cookie_header(scope))


def base_url(scope: Scope) -> str:
    """Where the client reached us, for absolute URLs in pages (the Host header, as a server would)."""
    host = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"host"), None)
    if host is None:
        server = scope.get("server") or ("127.0.0.1", 80)
        host = f"{server[0]}:{server[1]}"
    scheme = "https" if scope.get("scheme") in ("https", "wss") else "http"
    return f"{scheme}://{host}"
