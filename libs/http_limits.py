"""What an HTTP server of ours holds for a client before the client has proved anything.

A request's head (request line and header fields) and its body arrive before authentication,
so each is bounded in size, count and time, and the number of open connections is bounded too:
otherwise anyone who can reach the port can hold the server's memory or descriptors. The edge
enforces these in its uvicorn protocol (`libs/fenced/uvicorn_internals.py`); with private APIs
off, uvicorn's public settings cover part of them (see `services/edge/__main__.py`).
"""

from __future__ import annotations

import logging
import resource
from dataclasses import dataclass

log = logging.getLogger("switchyard.http_limits")

# Descriptors an edge needs besides its clients': listening sockets, NATS connections, epoll,
# log files, a reconnect's new socket before the old one is closed, Python's own.
RESERVED_DESCRIPTORS = 64


@dataclass(frozen=True)
class ConnectionLimits:
    max_header_bytes: int = 32 * 1024  # request line + header fields of one request
    max_headers: int = 100  # header fields of one request
    head_timeout: float = 10.0  # from connect (or a keep-alive request's first byte) to the head's end
    # A body must arrive at this average rate once `head_timeout` has passed since its head:
    # big uploads on slow links pass, a trickle holds a connection for a bounded time.
    min_body_rate: float = 1024.0  # bytes per second
    max_connections: int = 2048  # open client connections; beyond it the oldest idle one goes


def descriptor_budget(requested: int) -> int:
    """How many client connections this process can hold, at most `requested`.

    The soft RLIMIT_NOFILE is raised to the hard one first (as Go's runtime does): the soft
    default of 1024 is a leftover of select(), which nothing here uses. A cap the descriptor
    limit cannot honour would let accept() fail with EMFILE before the cap acts, and then no
    client gets in at all; so the cap is lowered to what the limit leaves, with a warning.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        target = hard if hard != resource.RLIM_INFINITY else max(soft, requested + RESERVED_DESCRIPTORS)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return requested
    budget = max(1, soft - RESERVED_DESCRIPTORS)
    if budget < requested:
        log.warning("MAX_CONNECTIONS=%d is more than the descriptor limit (%d) allows: at most %d connections",
                    requested, soft, budget)
        return budget
    return requested
