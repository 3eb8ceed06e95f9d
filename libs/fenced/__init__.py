"""Every use of a dependency's private API lives in this package, and nowhere else.

Some hot-path savings reach into nats-py's and uvicorn's internals (see `nats_internals.py` and
`uvicorn_internals.py`). Internals change without notice between releases, so:

- `pyproject.toml` pins both to the releases the code was written and tested against, with
  upper bounds;
- at import, `private_apis_enabled()` checks the installed versions against `TESTED`: outside
  that range every caller takes the public-API path instead, and says so once in the log;
- `SY_PRIVATE_APIS=0` forces the public-API path anyway (an operator's escape hatch, and the
  test suite runs its core integration tests that way too).

Callers never touch a private member themselves: they ask this package for the fast or the
plain implementation of one thing.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from importlib.metadata import PackageNotFoundError, version

log = logging.getLogger("switchyard.fenced")

# distribution -> (lowest tested, first untested) release, compared as version tuples
TESTED: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "nats-py": ((2, 16), (2, 17)),
    "uvicorn": ((0, 54), (0, 55)),
    "bpe-openai": ((0, 1, 4), (0, 2)),  # bpe_openai_internals.py: the Rust tokenizer's own count
}
# dependencies whose untested release turns off only their own fast path (not the hot path's)
_SEPARATE = frozenset({"bpe-openai"})

SWITCH = "SY_PRIVATE_APIS"


def _release(text: str) -> tuple[int, ...]:
    """`2.16.0` -> (2, 16, 0); a pre-release or local suffix ends the numbers (`0.54.1rc1` -> (0, 54, 1))."""
    parts: list[int] = []
    for piece in text.split("."):
        match = re.match(r"\d+", piece)
        if match is None:
            break
        parts.append(int(match.group()))
        if match.end() != len(piece):
            break
    return tuple(parts)


def dist_tested(dist: str) -> bool:
    """Whether the installed release of `dist` is inside its tested range."""
    low, high = TESTED[dist]
    try:
        return low <= _release(version(dist)) < high
    except PackageNotFoundError:
        return False


def private_apis_switched_on() -> bool:
    """The operator's switch (SY_PRIVATE_APIS), whatever the releases."""
    return os.environ.get(SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def untested_versions() -> list[str]:
    """The fenced hot-path dependencies whose installed release is outside the tested range."""
    found: list[str] = []
    for dist, (low, high) in TESTED.items():
        if dist in _SEPARATE:
            continue
        try:
            installed = _release(version(dist))
        except PackageNotFoundError:
            found.append(f"{dist} (not installed)")
            continue
        if not low <= installed < high:
            found.append(f"{dist} {version(dist)}")
    return found


@functools.cache
def private_apis_enabled() -> bool:
    """Whether the fenced fast paths may be used in this process (decided once)."""
    if not private_apis_switched_on():
        return False
    untested = untested_versions()
    if untested:
        log.warning("private-API fast paths off: untested release of %s (tested: %s)", ", ".join(untested),
                    ", ".join(f"{d} {'.'.join(map(str, lo))}.x" for d, (lo, _) in TESTED.items()
                              if d not in _SEPARATE))
        return False
    return True
