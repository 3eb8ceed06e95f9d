"""`[sandbox ...]` directives of the Bing fake: flags (`search`) and `key=value` items, several
brackets merged left to right. Unknown names and bad values are refused loudly (an InvalidRequest
result in chat), so a typo in a test never passes silently."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

FLAGS = frozenset({"search", "image", "loading", "shrink", "close7", "two_messages", "drop", "rejected", "never"})
INT_KEYS = frozenset({"tokens", "apology", "after", "silence_ms", "latency_ms", "polls"})
RESULTS = ("Throttled", "CaptchaChallenge", "InvalidSession", "UnauthorizedRequest", "InvalidRequest",
           "ProcessingMessage")
CREATOR_KEYS = ("polls", "rejected", "never")  # what an image prompt carries to the creator
MAX_INT = 10_000_000
_BRACKET = re.compile(r"\[sandbox(?:\s+([^\]]*))?\]")


class DirectiveError(ValueError):
    pass


@dataclass(slots=True)
class Directives:
    flags: set[str] = field(default_factory=set)
    ints: dict[str, int] = field(default_factory=dict)
    result: str | None = None

    def creator_bracket(self) -> str:
        """The image-creator directives, re-written as one bracket (empty when there are none)."""
        items = [f"polls={self.ints['polls']}"] if "polls" in self.ints else []
        items += [flag for flag in ("rejected", "never") if flag in self.flags]
        return f" [sandbox {' '.join(items)}]" if items else ""


def parse(text: str) -> Directives:
    found = Directives()
    if "[sandbox" not in text:
        return found
    for match in _BRACKET.finditer(text):
        for item in (match.group(1) or "").split():
            key, sep, value = item.partition("=")
            if not sep:
                if key not in FLAGS:
                    raise DirectiveError(f"unknown sandbox flag {key!r} (flags: {', '.join(sorted(FLAGS))})")
                found.flags.add(key)
            elif key == "result":
                if value not in RESULTS:
                    raise DirectiveError(f"sandbox result={value!r} is not one of {', '.join(RESULTS)}")
                found.result = value
            elif key in INT_KEYS:
                if not value.isdigit() or int(value) > MAX_INT:
                    raise DirectiveError(f"sandbox directive {key}={value!r} is not an integer 0..{MAX_INT}")
                found.ints[key] = int(value)
            else:
                raise DirectiveError(f"unknown sandbox directive {key!r} (keys: {', '.join(sorted(INT_KEYS))}, "
                                     "result)")
    return found
