"""Every web pool's accounts as stored in SY_V1_ACCOUNTS, read once: for an operator's shell
(tools/accounts.py) and the admin API (GET /admin/pools). Read-only; no secret is stored there.

The pools' account specs (models, daily budgets) live in the workers' configuration, not on the
bus: a view read here knows an account's name and shared state only.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from libs.account_pool.buckets import ACCOUNTS_BUCKET
from libs.account_pool.pool import AccountSpec, AccountView, account_view
from libs.account_pool.state import AccountState
from libs.kv_watch import current_entries


async def read_pools(js: JetStreamContext, pool: str | None = None) -> dict[str, list[AccountView]]:
    """pool → its accounts (sorted by name); only `pool` when given. Empty when no web worker ever ran."""
    try:
        kv = await js.key_value(ACCOUNTS_BUCKET)
    except NotFoundError:
        return {}
    states: dict[str, dict[str, AccountState]] = {}
    for key, value in await current_entries(kv, f"{pool}.*" if pool else ">"):
        pool_name, _, name = key.partition(".")
        states.setdefault(pool_name, {})[name] = AccountState.decode(value)
    now = time.time()
    return {p: [account_view(n, AccountSpec(n), s, now) for n, s in sorted(accounts.items())]
            for p, accounts in sorted(states.items())}


def view_json(view: AccountView) -> dict[str, Any]:
    """An account as the admin API shows it."""
    shown = asdict(view)
    if view.state != "leased":
        shown["holder"] = None
    return shown
