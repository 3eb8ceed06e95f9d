"""`python -m services.sandbox.agent`: K fake browser agents on one server (see the package docstring)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

from .agent import Agent


def _args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m services.sandbox.agent", description=__doc__)
    parser.add_argument("--server", required=True, help="ws://HOST:PORT/client/register")
    parser.add_argument("--name", default="agent", help="the agent's name in its answers (default: agent)")
    parser.add_argument("--count", type=int, default=1, help="how many agents (sockets) to run (default: 1)")
    parser.add_argument("--reconnect-ms", type=int, default=None,
                        help="reconnect this many ms after a socket closes, reclaiming the id (default: off)")
    args = parser.parse_args(argv)
    if args.count < 1:
        parser.error("--count must be at least 1")
    if args.reconnect_ms is not None and args.reconnect_ms < 0:
        parser.error("--reconnect-ms must be >= 0")
    if not args.server.startswith(("ws://", "wss://")):
        parser.error("--server must be a ws:// or wss:// URL")
    return args


async def _main(args: argparse.Namespace) -> int:
    names = [args.name] if args.count == 1 else [f"{args.name}-{i}" for i in range(1, args.count + 1)]
    runs = [asyncio.create_task(Agent(args.server, name).run(args.reconnect_ms)) for name in names]
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):  # no signal handlers on some platforms
            loop.add_signal_handler(sig, lambda: [run.cancel() for run in runs])
    try:
        results = await asyncio.gather(*runs)
    except asyncio.CancelledError:
        return 0
    return 0 if all(results) else 1


def main(argv: list[str] | None = None) -> None:
    raise SystemExit(asyncio.run(_main(_args(argv))))


if __name__ == "__main__":
    main()
