"""Managed API keys across two edges on one NATS: made on one, accepted by the other; disabled,
deleted or expired, refused by both within a second; seed 002's admin routes with their exact
shapes; /admin/keys; the keys never in a log; a NATS restart loses none; the CLI makes one."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import nats
import orjson
import pytest

from libs.devproc import REPO_ROOT, Proc, free_port, start_nats_server
from libs.keys import KEYS_BUCKET
from tests.conftest import AUTH_KEY, start_edge
from tests.wiretap import Wiretap

ADMIN_KEY = "admin-test-key-9f8e7d6c5b4a"
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
# not a shape libs/secrets.py's patterns scrub from log lines: the log checks see what the code writes
PREFIX = "swk_"
PROPAGATION = 1.0  # the bound: a change reaches every edge within this


async def _drop_keys_bucket(nats_url: str) -> None:
    nc = await nats.connect(nats_url)
    try:
        with contextlib.suppress(Exception):
            await nc.jetstream().delete_key_value(KEYS_BUCKET)
    finally:
        await nc.close()


@pytest.fixture(scope="module", autouse=True)
def no_keys_left_behind(nats_server: Proc) -> Iterator[None]:
    """The session's NATS is shared: a key left in it would close every open edge started later."""
    yield
    asyncio.run(_drop_keys_bucket(nats_server.url))


@pytest.fixture(scope="module")
def edges(nats_server: Proc, wiretap: Wiretap, log_dir: Path) -> Iterator[tuple[Proc, Proc]]:
    a = start_edge(nats_server.url, log_dir, name="keys-edge-a", ADMIN_KEY=ADMIN_KEY, API_KEY_PREFIX=PREFIX)
    b = start_edge(nats_server.url, log_dir, name="keys-edge-b", ADMIN_KEY=ADMIN_KEY, API_KEY_PREFIX=PREFIX)
    yield a, b
    b.stop()
    a.stop()


async def status_with(client: httpx.AsyncClient, edge: Proc, key: str) -> int:
    return (await client.get(edge.url + "/v1/models", headers={"authorization": f"Bearer {key}"})).status_code


async def wait_status(client: httpx.AsyncClient, edges: tuple[Proc, ...], key: str, want: int,
                      within: float = PROPAGATION) -> float:
    """Poll every edge until each answers `want` for `key`; the time it took (bounded)."""
    started = time.monotonic()
    while True:
        got = [await status_with(client, edge, key) for edge in edges]
        if all(s == want for s in got):
            return time.monotonic() - started
        if time.monotonic() - started > within:
            raise AssertionError(f"after {within} s the edges answer {got}, not {want}")
        await asyncio.sleep(0.02)


def assert_never_logged(procs: tuple[Proc, ...], *secrets: str) -> None:
    for proc in procs:
        text = proc.log_path.read_text(errors="replace")
        for secret in secrets:
            assert secret not in text, f"a secret is in {proc.log_path}"


async def test_a_key_made_on_one_edge_works_on_the_other_and_stops_on_both(edges: tuple[Proc, Proc]) -> None:
    a, b = edges
    async with httpx.AsyncClient(timeout=10) as client:
        made = await client.post(a.url + "/admin/keys", headers=ADMIN,
                                 json={"name": "two edges", "owner": "ops", "rpm": 60, "models": ["sandbox-*"]})
        assert made.status_code == 200, made.text
        key, key_id = made.json()["key"], made.json()["id"]
        assert key.startswith(PREFIX) and len(key) == len(PREFIX) + 43
        await wait_status(client, (a, b), key, 200)
        assert await status_with(client, a, PREFIX + "x" * 43) == 401  # an unknown key of the same shape

        disabled = await client.post(b.url + f"/admin/keys/{key_id}/disable", headers=ADMIN)
        assert disabled.json()["enabled"] is False and disabled.json()["key"] == PREFIX + "…" + key[-4:]
        await wait_status(client, (a, b), key, 401)

        enabled = await client.patch(a.url + f"/admin/keys/{key_id}", headers=ADMIN, json={"enabled": True})
        assert enabled.status_code == 200 and enabled.json()["enabled"] is True
        await wait_status(client, (a, b), key, 200)

        deleted = await client.delete(a.url + f"/admin/keys/{key_id}", headers=ADMIN)
        assert deleted.json() == {"id": key_id, "object": "api_key.deleted", "deleted": True}
        await wait_status(client, (a, b), key, 401)
        assert await status_with(client, a, AUTH_KEY) == 200  # the static key as before
    assert_never_logged(edges, key, ADMIN_KEY)


async def test_an_expired_key_is_refused(edges: tuple[Proc, Proc]) -> None:
    a, b = edges
    async with httpx.AsyncClient(timeout=10) as client:
        past = (await client.post(a.url + "/admin/keys", headers=ADMIN, json={"expires_at": time.time() - 1})).json()
        soon = (await client.post(a.url + "/admin/keys", headers=ADMIN, json={"expires_at": time.time() + 1.5}))
        soon_key = soon.json()["key"]
        assert soon.json()["expires_at"] is not None
        await wait_status(client, (a, b), soon_key, 200)
        assert await status_with(client, a, past["key"]) == 401
        assert await status_with(client, b, past["key"]) == 401
        await wait_status(client, (a, b), soon_key, 401, within=3.0)


async def test_seed_002_routes_with_their_exact_shapes(edges: tuple[Proc, Proc]) -> None:
    a, b = edges
    async with httpx.AsyncClient(timeout=10) as client:
        added = await client.post(a.url + "/admin/users/add", json={"admin_key": ADMIN_KEY})
        assert added.status_code == 200 and set(added.json()) == {"user_id", "token"}
        user_id, token = added.json()["user_id"], added.json()["token"]
        await wait_status(client, (a, b), token, 200)  # a user token is an API key like any other
        by_bearer = await client.post(b.url + "/admin/users/add", headers=ADMIN)
        assert by_bearer.status_code == 200 and set(by_bearer.json()) == {"user_id", "token"}

        for listed in (await client.get(b.url + "/admin/users", params={"admin_key": ADMIN_KEY}),
                       await client.get(b.url + "/admin/users", headers=ADMIN)):
            assert listed.status_code == 200 and set(listed.json()) == {"users"}
            users = listed.json()["users"]
            assert all(set(u) == {"user_id", "token"} for u in users)
            assert {"user_id": user_id, "token": PREFIX + "…" + token[-4:]} in users
            assert token not in listed.text

        wrong = "not-the-admin-key"
        for refused in (await client.get(a.url + "/admin/users", params={"admin_key": wrong}),
                        await client.get(a.url + "/admin/users"),
                        await client.post(a.url + "/admin/users/add", json={"admin_key": wrong}),
                        await client.post(a.url + "/admin/users/delete", json={"admin_key": wrong, "user_id": user_id}),
                        await client.post(a.url + "/admin/users/add", json={"admin_key": AUTH_KEY})):
            assert refused.status_code == 401 and refused.json() == {"error": "Invalid admin key"}, refused.text
        for bad in (await client.post(a.url + "/admin/users/add", content=b"{not json"),
                    await client.post(a.url + "/admin/users/delete", content=b"[1]"),
                    await client.post(a.url + "/admin/users/delete", json={"admin_key": ADMIN_KEY})):
            assert bad.status_code == 400 and bad.json() == {"error": "Invalid request body"}, bad.text

        gone = await client.post(b.url + "/admin/users/delete", json={"admin_key": ADMIN_KEY, "user_id": user_id})
        assert gone.status_code == 200 and gone.json() == {"message": "User deleted"}
        await wait_status(client, (a, b), token, 401)
        unknown = await client.post(a.url + "/admin/users/delete", json={"admin_key": ADMIN_KEY, "user_id": "nobody"})
        assert unknown.status_code == 200 and unknown.json() == {"message": "User deleted"}
    assert_never_logged(edges, token, by_bearer.json()["token"], ADMIN_KEY)


async def test_admin_keys_rest_api(edges: tuple[Proc, Proc]) -> None:
    a, b = edges
    limits = {"name": "crud", "owner": "team-a", "models": ["gpt-4o*"], "rpm": 10, "tpm": 1000,
              "max_concurrent": 2, "budget_total": 100000, "budget_period_tokens": 5000,
              "budget_period_seconds": 86400}
    async with httpx.AsyncClient(timeout=10) as client:
        made = (await client.post(a.url + "/admin/keys", headers=ADMIN, json=limits)).json()
        assert {k: made[k] for k in limits} == limits and made["enabled"] is True and "hash" not in made
        key_id, key = made["id"], made["key"]
        listed = (await client.get(a.url + "/admin/keys", headers=ADMIN)).json()
        assert listed["object"] == "list" and key not in str(listed)
        assert any(k["id"] == key_id and k["key"] == PREFIX + "…" + key[-4:] for k in listed["data"])
        deadline = time.monotonic() + PROPAGATION
        while (got := await client.get(b.url + f"/admin/keys/{key_id}", headers=ADMIN)).status_code == 404:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        assert got.json()["rpm"] == 10 and key not in got.text
        patched = await client.patch(b.url + f"/admin/keys/{key_id}", headers=ADMIN, json={"rpm": 20, "tpm": None})
        assert patched.json()["rpm"] == 20 and patched.json()["tpm"] is None and patched.json()["name"] == "crud"

        for bad_body in ({"rpm": "ten"}, {"rpm": -1}, {"nope": 1}, {"enabled": None}, {"models": [1]}):
            bad = await client.patch(a.url + f"/admin/keys/{key_id}", headers=ADMIN, json=bad_body)
            assert bad.status_code == 400 and bad.json()["error"]["param"] == next(iter(bad_body)), bad.text
            assert set(bad.json()["error"]) == {"message", "type", "param", "code"}
        assert (await client.post(a.url + "/admin/keys", headers=ADMIN, content=b"{")).status_code == 400
        missing = await client.get(a.url + "/admin/keys/key_nothing", headers=ADMIN)
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "key_not_found"
        for headers in ({"authorization": "Bearer wrong-admin-key"}, {}, {"authorization": f"Bearer {AUTH_KEY}"},
                        {"authorization": f"Bearer {key}"}):
            refused = await client.get(a.url + "/admin/keys", headers=headers)
            assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
            assert ADMIN_KEY not in refused.text
        assert (await client.delete(b.url + f"/admin/keys/{key_id}", headers=ADMIN)).status_code == 200
        assert (await client.delete(b.url + f"/admin/keys/{key_id}", headers=ADMIN)).status_code == 404
    assert_never_logged(edges, key, ADMIN_KEY)


async def test_without_an_admin_key_the_admin_api_is_a_404(nats_server: Proc, log_dir: Path) -> None:
    edge = start_edge(nats_server.url, log_dir, name="keys-edge-noadmin")
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            for response in (await client.post(edge.url + "/admin/keys", headers=ADMIN, json={}),
                             await client.get(edge.url + "/admin/users", params={"admin_key": ""}),
                             await client.post(edge.url + "/admin/users/add", json={"admin_key": ""}),
                             await client.get(edge.url + "/api/connections", headers=ADMIN)):
                assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    finally:
        edge.stop()


@dataclass
class CliRun:
    returncode: int
    stdout: str
    stderr: str


async def run_cli(nats_url: str, *args: str) -> CliRun:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tools.keys", *args, cwd=REPO_ROOT, env={**os.environ, "NATS_URL": nats_url},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    return CliRun(proc.returncode or 0, out.decode(), err.decode())


async def test_the_cli_makes_a_key_that_works(nats_server: Proc, edges: tuple[Proc, Proc]) -> None:
    made = await run_cli(nats_server.url, "create", "--name", "from the shell", "--rpm", "5")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert key.startswith("sb-") and key not in made.stderr
    async with httpx.AsyncClient(timeout=10) as client:
        await wait_status(client, edges, key, 200)
        record = orjson.loads(made.stderr)
        assert record["name"] == "from the shell" and record["rpm"] == 5
        listed = await run_cli(nats_server.url, "list")
        assert listed.returncode == 0 and record["id"] in listed.stdout and key not in listed.stdout
        assert (await run_cli(nats_server.url, "disable", record["id"])).returncode == 0
        await wait_status(client, edges, key, 401)
        assert (await run_cli(nats_server.url, "delete", record["id"])).returncode == 0
        assert (await run_cli(nats_server.url, "get", record["id"])).returncode == 1
    assert_never_logged(edges, key)


async def test_keys_outlive_a_nats_restart_and_the_watch_resumes(log_dir: Path) -> None:
    """A bucket of its own (the session's holds other tests' keys): `{"users": null}` when empty."""
    port = free_port()
    run_dir = log_dir / "keys-restart"
    nats = start_nats_server(log_dir=run_dir, store_dir=run_dir / "js", port=port)
    edge = start_edge(nats.url, run_dir, name="keys-restart-edge", ADMIN_KEY=ADMIN_KEY)
    fresh: Proc | None = None
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            empty = await client.get(edge.url + "/admin/users", params={"admin_key": ADMIN_KEY})
            assert empty.status_code == 200 and empty.json() == {"users": None}
            made = (await client.post(edge.url + "/admin/keys", headers=ADMIN, json={"name": "durable"})).json()
            nats.signal(signal.SIGKILL)
            nats.popen.wait(timeout=5)
            # while the bus is away: the key still works from the mirror; a write is a clear error
            assert await status_with(client, edge, made["key"]) == 200
            down = await client.post(edge.url + "/admin/keys", headers=ADMIN, json={})
            assert down.status_code == 503 and down.json()["error"]["code"] == "bus_unavailable", down.text
            seed_down = await client.post(edge.url + "/admin/users/add", json={"admin_key": ADMIN_KEY})
            assert seed_down.status_code == 500
            assert seed_down.json() == {"error": "Failed to insert user_id and token into database"}
            nats = start_nats_server(log_dir=run_dir, store_dir=run_dir / "js", port=port)  # the same store
            fresh = start_edge(nats.url, run_dir, name="keys-restart-fresh", ADMIN_KEY=ADMIN_KEY)
            # a new edge reads the key from the restarted server's bucket: it was not lost
            await wait_status(client, (fresh, edge), made["key"], 200)
            disabled = await client.post(fresh.url + f"/admin/keys/{made['id']}/disable", headers=ADMIN)
            assert disabled.status_code == 200
            # the old edge hears of it: its watch was set up again after the reconnect
            await wait_status(client, (edge, fresh), made["key"], 401, within=10.0)
    finally:
        if fresh is not None:
            fresh.stop()
        edge.stop()
        nats.stop()
