"""Manage API keys from a shell: straight on the KV bucket SY_V1_API_KEYS, through NATS_URL.

    python -m tools.keys create [--name N] [--owner O] [--expires-in SECONDS] [--models PAT,PAT]
                                [--rpm N] [--tpm N] [--max-concurrent N] [--budget-total N]
    python -m tools.keys list
    python -m tools.keys get ID
    python -m tools.keys disable ID
    python -m tools.keys enable ID
    python -m tools.keys delete ID
    python -m tools.keys usage ID [--start T] [--end T] [--group hour] [--limit N]
    python -m tools.keys pools

It talks to the bus rather than to an edge's admin API so that the first key can be made before
any edge runs, without an ADMIN_KEY, with the same code the edges use (libs/keys.py); whoever can
reach NATS can read and write every bucket anyway. Every edge's watch brings the change within a
second. `create` prints the key once, on stdout, and the record as JSON on stderr; nothing else
ever shows it. API_KEY_PREFIX sets the key's prefix (default `sb-`), as on the edge.

`usage` prints a key's usage records over a period (default the last 24 h; T is unix seconds or
RFC 3339), or its hourly aggregates per model (--group hour), as GET /admin/keys/{id}/usage does;
any key id (`static-1`, `open`, a deleted key's). `pools` prints every web pool's accounts and
their state, as GET /admin/pools does (tools/accounts.py also acts on one pool's accounts).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

import nats
import orjson
from nats.js import JetStreamContext

from libs.account_pool.reader import read_pools, view_json
from libs.keys import DEFAULT_PREFIX, KeyAdmin, ensure_keys_bucket, valid_id
from libs.settings import env_str
from libs.usage import USAGE_DEFAULT_LIMIT, USAGE_DEFAULT_PERIOD, USAGE_MAX_LIMIT, instant
from libs.usage_query import read_hourly, read_records


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.keys", description="Manage the gateway's API keys.")
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="create a key: printed once, on stdout")
    create.add_argument("--name", default="")
    create.add_argument("--owner", default="")
    create.add_argument("--expires-in", type=float, help="seconds from now")
    create.add_argument("--models", help="allowed model patterns, comma-separated")
    for flag in ("rpm", "tpm", "max-concurrent", "budget-total", "budget-period-tokens", "budget-period-seconds"):
        create.add_argument(f"--{flag}", type=int)
    commands.add_parser("list", help="every key, masked")
    for name in ("get", "disable", "enable", "delete"):
        commands.add_parser(name).add_argument("id")
    usage = commands.add_parser("usage", help="a key's usage records, or hourly aggregates (--group hour)")
    usage.add_argument("id")
    usage.add_argument("--start", help="unix seconds or RFC 3339; default: 24 h before --end")
    usage.add_argument("--end", help="unix seconds or RFC 3339; default: now")
    usage.add_argument("--group", choices=["hour"])
    usage.add_argument("--limit", type=int, default=USAGE_DEFAULT_LIMIT)
    commands.add_parser("pools", help="every web pool's accounts and their state")
    return parser


async def _usage(js: JetStreamContext, args: argparse.Namespace) -> dict[str, Any]:
    end = instant(args.end, "end") if args.end else time.time()
    start = instant(args.start, "start") if args.start else end - USAGE_DEFAULT_PERIOD
    period = {"key": args.id, "start": start, "end": end}
    if args.group == "hour":
        return {"object": "list", **period, "group": "hour", "data": await read_hourly(js, args.id, start, end)}
    records, more = await read_records(js, args.id, start, end, max(1, min(args.limit, USAGE_MAX_LIMIT)))
    return {"object": "list", **period, "data": records, "has_more": more}


def _fields(args: argparse.Namespace) -> dict[str, Any]:
    fields: dict[str, Any] = {"name": args.name, "owner": args.owner}
    if args.expires_in is not None:
        fields["expires_at"] = time.time() + args.expires_in
    if args.models:
        fields["models"] = [m.strip() for m in args.models.split(",") if m.strip()]
    for name in ("rpm", "tpm", "max_concurrent", "budget_total", "budget_period_tokens", "budget_period_seconds"):
        if getattr(args, name) is not None:
            fields[name] = getattr(args, name)
    return fields


def _show(payload: Any) -> None:
    print(orjson.dumps(payload, option=orjson.OPT_INDENT_2).decode())


async def run(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    nc = await nats.connect(env_str("NATS_URL", "nats://127.0.0.1:4222"), connect_timeout=5,
                            max_reconnect_attempts=0)
    try:
        admin = KeyAdmin(await ensure_keys_bucket(nc.jetstream()), env_str("API_KEY_PREFIX", DEFAULT_PREFIX).strip())
        if args.command == "create":
            key, record, _ = await admin.create(_fields(args))
            print(orjson.dumps(record.public()).decode(), file=sys.stderr)
            print(key)
            return 0
        if args.command == "usage":
            if not valid_id(args.id):
                print(f"not a key id: {args.id}", file=sys.stderr)
                return 1
            _show(await _usage(nc.jetstream(), args))
            return 0
        if args.command == "pools":
            pools = await read_pools(nc.jetstream())
            _show({"object": "list", "data": [{"pool": name, "accounts": [view_json(v) for v in views]}
                                              for name, views in pools.items()]})
            return 0
        if args.command == "list":
            _show({"object": "list", "data": [r.public() for r in await admin.all_records()]})
            return 0
        if args.command == "delete":
            if not await admin.delete(args.id):
                print(f"no key {args.id}", file=sys.stderr)
                return 1
            _show({"id": args.id, "object": "api_key.deleted", "deleted": True})
            return 0
        got = (await admin.get(args.id) if args.command == "get"
               else await admin.update(args.id, {"enabled": args.command == "enable"}))
        if got is None:
            print(f"no key {args.id}", file=sys.stderr)
            return 1
        _show(got[0].public())
        return 0
    finally:
        await nc.close()


def main() -> None:
    raise SystemExit(asyncio.run(run(sys.argv[1:])))


if __name__ == "__main__":
    main()
