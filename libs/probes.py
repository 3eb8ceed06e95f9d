"""What every service's health and readiness answers carry besides their status.

Each names the process that gave it (`x-switchyard-pid`), so whoever started a service and polls
its port (libs/devproc.py, `make run`) knows it reached that process and not another one that
holds the port: a second stack, or an old edge left running.
"""

from __future__ import annotations

import os

PID_HEADER = "x-switchyard-pid"


def pid_header() -> tuple[bytes, bytes]:
    """The header as a raw ASGI pair, for this process."""
    return PID_HEADER.encode(), str(os.getpid()).encode()
