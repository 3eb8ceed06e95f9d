"""GET /admin/pools and `python -m tools.keys pools`: every web pool's accounts as the workers left
them in SY_V1_ACCOUNTS (leased with its holder, cooling with until and model, quarantined with its
reason, conversations today), from one reader; never a secret. On a NATS of this module's own."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import orjson
import pytest

from libs.account_pool.outcome import Outcome, Verdict
from libs.account_pool.pool import AccountPool, AccountSpec
from libs.devproc import REPO_ROOT, Proc, start_nats_server
from tests.conftest import start_edge

ADMIN_KEY = "admin-pools-key-0a1b2c3d4e5f"
FINGERPRINT = "fp-secretish-77aa"  # a hash of an account's credentials: the pool keeps it, never shows it


@pytest.fixture(scope="module")
def pools_nats(log_dir: Path) -> Iterator[Proc]:
    proc = start_nats_server(log_dir=log_dir / "pools-nats", store_dir=log_dir / "pools-nats" / "js")
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def pools_edge(pools_nats: Proc, log_dir: Path) -> Iterator[Proc]:
    edge = start_edge(pools_nats.url, log_dir, name="pools-edge", ADMIN_KEY=ADMIN_KEY)
    yield edge
    edge.stop()


async def _set_up_accounts(nats_url: str) -> Any:
    """A web pool as a worker leaves it: one account leased, one cooling, one quarantined,
    one free having begun two conversations today and resting for one model."""
    nc = await nats.connect(nats_url)
    specs = [AccountSpec(name, fingerprint=FINGERPRINT, daily_budget=50)
             for name in ("acc-a", "acc-b", "acc-c", "acc-d")]
    pool = AccountPool(nc.jetstream(), "chatgpt-web", specs, holder="worker-7")
    await pool.start()
    cooled = await pool.acquire_named("acc-b", None, timeout=5)
    await cooled.release(Outcome(Verdict.RATE_LIMITED, clears_in=600, reason="rate limited"))
    counted = await pool.acquire_named("acc-d", None, timeout=5)
    await counted.release(Outcome(Verdict.OK, conversations=2))
    capped = await pool.acquire_named("acc-d", None, timeout=5)
    await capped.release(Outcome(Verdict.RATE_LIMITED, model="gpt-4o", clears_in=600, reason="model cap"))
    await pool.quarantine("acc-c", "login refused")
    held = await pool.acquire_named("acc-a", None, timeout=5)
    return nc, pool, held


async def test_the_pools_state_without_a_secret(pools_nats: Proc, pools_edge: Proc) -> None:
    nc, pool, held = await _set_up_accounts(pools_nats.url)
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            assert (await client.get(pools_edge.url + "/admin/pools")).status_code == 401
            got = await client.get(pools_edge.url + "/admin/pools", headers={"authorization": f"Bearer {ADMIN_KEY}"})
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tools.keys", "pools", cwd=REPO_ROOT, env={"NATS_URL": pools_nats.url},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
    finally:
        await held.release(Outcome.ok())
        await pool.stop()
        await nc.close()
    assert got.status_code == 200, got.text
    body = got.json()
    assert [p["pool"] for p in body["data"]] == ["chatgpt-web"]
    accounts = {a["name"]: a for a in body["data"][0]["accounts"]}
    assert accounts["acc-a"]["state"] == "leased" and accounts["acc-a"]["holder"] == "worker-7"
    assert accounts["acc-a"]["until"] > 0
    assert accounts["acc-b"]["state"] == "cooling" and accounts["acc-b"]["reason"] == "rate limited"
    assert accounts["acc-b"]["until"] > 0 and accounts["acc-b"]["holder"] is None
    assert accounts["acc-c"]["state"] == "quarantined" and accounts["acc-c"]["reason"] == "login refused"
    # free for its other models, resting for one
    assert accounts["acc-d"]["state"] == "free" and accounts["acc-d"]["conversations_today"] == 2
    assert set(accounts["acc-d"]["model_cooldowns"]) == {"gpt-4o"}
    # the CLI reads the same (a lease's `until` moves as it is renewed)
    assert proc.returncode == 0
    cli = orjson.loads(out)["data"][0]
    assert [(a["name"], a["state"], a["reason"]) for a in cli["accounts"]] == [
        (a["name"], a["state"], a["reason"]) for a in body["data"][0]["accounts"]]
    for shown in (got.content, out):
        for secret in (FINGERPRINT, ADMIN_KEY):
            assert secret.encode() not in shown
    assert ADMIN_KEY not in pools_edge.log_path.read_text(errors="replace")


async def test_no_web_pool_is_an_empty_list(log_dir: Path) -> None:
    server = start_nats_server(log_dir=log_dir / "pools-empty", store_dir=log_dir / "pools-empty" / "js")
    edge = start_edge(server.url, log_dir, name="pools-edge-empty", ADMIN_KEY=ADMIN_KEY)
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            got = await client.get(edge.url + "/admin/pools", headers={"authorization": f"Bearer {ADMIN_KEY}"})
    finally:
        edge.stop()
        server.stop()
    assert got.status_code == 200 and got.json() == {"object": "list", "data": []}
