"""`[agent ...]` directives: faults of the fake agent, written in the prompt (see the package docstring)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_BRACKET = re.compile(r"\[agent(?:\s+([^\]]*))?\]")
MAX_DELAY_MS = 600_000


class DirectiveError(ValueError):
    pass


@dataclass(slots=True)
class Directives:
    delay_ms: int = 0
    error: str | None = None
    die: bool = False
    silent: bool = False


def parse(text: str) -> Directives:
    found = Directives()
    if "[agent" not in text:
        return found
    for match in _BRACKET.finditer(text):
        body = (match.group(1) or "").strip()
        while body:
            if body.startswith("error="):  # its text runs to the end of the bracket
                found.error = body[len("error="):].strip()
                if not found.error:
                    raise DirectiveError("agent directive error= needs a text")
                break
            item, _, body = body.partition(" ")
            body = body.strip()
            key, sep, value = item.partition("=")
            if not sep and key in ("die", "silent"):
                setattr(found, key, True)
            elif key == "delay_ms" and sep:
                if not value.isdigit() or int(value) > MAX_DELAY_MS:
                    raise DirectiveError(f"agent directive delay_ms={value!r} is not an integer 0..{MAX_DELAY_MS}")
                found.delay_ms = int(value)
            else:
                raise DirectiveError(f"unknown agent directive {item!r} (known: delay_ms=N, error=TEXT, die, silent)")
    return found
