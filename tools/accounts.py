"""The accounts of a web pool as every replica sees them (JetStream KV), for an operator's shell:

    python -m tools.accounts [--pool chatgpt-web] [--json] [--quarantine NAME --reason TEXT | --restore NAME]

NATS_URL as everywhere. Prints name, state (free; leased: held by a replica for a turn, or idle for
its next one; cooling; quarantined), until, conversations begun today (UTC), reason and
the per-model cooldowns; never a secret (the pool holds none). The admin API and console of a later
issue read the same views.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

import orjson

from libs.account_pool.pool import AccountPool, AccountSpec
from libs.account_pool.reader import read_pools
from libs.bus import connect
from libs.logs import url_without_credentials
from libs.settings import env_str


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.accounts", description=__doc__.splitlines()[0])
    parser.add_argument("--pool", default="chatgpt-web")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--quarantine", metavar="NAME")
    parser.add_argument("--reason", default="quarantined by the operator")
    parser.add_argument("--restore", metavar="NAME")
    args = parser.parse_args(argv)
    url = env_str("NATS_URL", "nats://127.0.0.1:4222")
    try:
        nc = await asyncio.wait_for(connect(url, name="accounts-tool"), 5)
    except Exception as exc:  # nothing listening, a refused login: one line, no traceback
        print(f"cannot reach NATS at {url_without_credentials(url)} ({type(exc).__name__}); set NATS_URL",
              file=sys.stderr)
        return 1
    try:
        js = nc.jetstream()
        names = [v.name for v in (await read_pools(js, args.pool)).get(args.pool, [])]
        pool = AccountPool(js, args.pool, [AccountSpec(n) for n in names], holder="accounts-tool")
        await pool.start()
        if args.quarantine:
            await pool.quarantine(args.quarantine, args.reason)
        if args.restore:
            await pool.restore(args.restore)
        views = pool.accounts()
        await pool.stop()
    finally:
        await nc.close()
    if args.json:
        print(orjson.dumps([vars(v) for v in views]).decode())
        return 0
    now = time.time()
    print(f"{'account':<24} {'state':<12} {'for':>8} {'today':>6}  reason")
    for v in views:
        left = f"{v.until - now:.0f}s" if v.until else "-"
        models = ", ".join(f"{m} {t - now:.0f}s" for m, t in v.model_cooldowns.items())
        print(f"{v.name:<24} {v.state:<12} {left:>8} {v.conversations_today:>6}  "
              f"{v.reason}{'  [' + models + ']' if models else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
