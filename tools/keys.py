"""Manage API keys from a shell: straight on the KV bucket SY_V1_API_KEYS, through NATS_URL.

    python -m tools.keys create [--name N] [--owner O] [--expires-in SECONDS] [--models PAT,PAT]
                                [--rpm N] [--tpm N] [--max-concurrent N] [--budget-total N]
    python -m tools.keys list
    python -m tools.keys get ID
    python -m tools.keys disable ID
    python -m tools.keys enable ID
    python -m tools.keys delete ID

It talks to the bus rather than to an edge's admin API so that the first key can be made before
any edge runs, without an ADMIN_KEY, with the same code the edges use (libs/keys.py); whoever can
reach NATS can read and write every bucket anyway. Every edge's watch brings the change within a
second. `create` prints the key once, on stdout, and the record as JSON on stderr; nothing else
ever shows it. API_KEY_PREFIX sets the key's prefix (default `sb-`), as on the edge.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

import nats
import orjson

from libs.keys import DEFAULT_PREFIX, KeyAdmin, ensure_keys_bucket
from libs.settings import env_str


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
    return parser


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
