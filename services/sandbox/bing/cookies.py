"""Cookie headers read leniently (browser exports and `k=v; ` strings with a trailing separator), the
account a `_U` cookie names, and the cookies the fake sets on create."""

from __future__ import annotations

import itertools
import os
import re
import time
from email.utils import formatdate

USER_PREFIX = "sandbox-u-"
_ACCOUNT = re.compile(r"[a-z0-9-]+\Z")
_rwbf_count = itertools.count(1)


def parse(header: bytes | None) -> dict[str, str]:
    """Pieces split on ';', each on its FIRST '=' (values keep their own '='); no '=' or empty name:
    skipped. Several Cookie headers are joined by the caller."""
    if not header:
        return {}
    out: dict[str, str] = {}
    for piece in header.decode("latin-1").split(";"):
        name, sep, value = piece.strip().partition("=")
        if sep and name.strip():
            out[name.strip()] = value.strip()
    return out


def account_of(cookies: dict[str, str]) -> tuple[str | None, bool]:
    """(account, known): no or empty `_U` is anonymous (None, True); `sandbox-u-<name>` is <name>;
    any other value is an unknown user (None, False)."""
    value = cookies.get("_U", "")
    if not value:
        return None, True
    name = value.removeprefix(USER_PREFIX)
    if value.startswith(USER_PREFIX) and _ACCOUNT.match(name):
        return name, True
    return None, False


def set_cookies(cookies: dict[str, str]) -> list[tuple[bytes, bytes]]:
    """`MUIDB` when the client has none yet, and on every call a rotating `_RwBf` shaped like Bing's
    (its value is full of '=' and '&'), so a client's merge of Set-Cookie into its cookie set shows."""
    headers: list[tuple[bytes, bytes]] = []
    expires = formatdate(time.time() + 180 * 86400, usegmt=True)
    if "MUIDB" not in cookies:
        headers.append((b"set-cookie", f"MUIDB={os.urandom(16).hex().upper()}; path=/; expires={expires}; HttpOnly"
                        .encode()))
    count = next(_rwbf_count)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.0000000Z", time.gmtime())
    rwbf = (f"r=0&ilt={count}&ihpd=0&ispd=1&rc={count}&rb=0&gb=0&rg=200&pc=0&mtu=0&rbb=0&g=0&cid=&clo=0&v=1"
            f"&l={stamp[:10]}T07:00:00.0000000Z&lft=0001-01-01T00:00:00.0000000&aof=0&o=0&p=&c=&t=0"
            f"&s=0001-01-01T00:00:00.0000000+00:00&ts={stamp}&rwred=0&wls=&wlb=&wle=&ccp=&cpt=&lka=0&lkt=0&TH=")
    headers.append((b"set-cookie", f"_RwBf={rwbf}; path=/; expires={expires}".encode()))
    return headers
