"""libs/account_pool against a real nats-server: two "replicas" (two connections) sharing accounts.

Each test uses a pool of its own in the one KV bucket; time limits are small (policy per test).
"""

from __future__ import annotations

import asyncio
import itertools
import statistics
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import nats
import pytest
import pytest_asyncio
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from prometheus_client import CollectorRegistry, generate_latest

from libs.account_pool.buckets import ACCOUNTS_BUCKET
from libs.account_pool.conversations import ConversationMap, transcript_key
from libs.account_pool.metrics import PoolMetrics
from libs.account_pool.outcome import Outcome, Verdict
from libs.account_pool.pool import (
    AccountGone,
    AccountPool,
    AccountSpec,
    NoEligibleAccount,
    PoolBusy,
    PoolPolicy,
)
from libs.devproc import Proc
from tests.conftest import metric
from tests.wiretap import Wiretap

_pools = itertools.count(1)
SLOW = PoolPolicy(lease_ttl=30.0)  # no renewal or expiry during a test that counts round trips
THREE = [AccountSpec("a"), AccountSpec("b"), AccountSpec("c")]

MakePool = Callable[..., Awaitable[AccountPool]]


class Replicas:
    """Connections standing for worker replicas, and the pools started on them (stopped at the end)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conns: list[NATS] = []
        self.pools: list[AccountPool] = []

    async def conn(self, i: int) -> NATS:
        while len(self.conns) <= i:
            self.conns.append(await nats.connect(self.url))
        return self.conns[i]

    async def pool(self, i: int, pool: str, specs: list[AccountSpec], policy: PoolPolicy = SLOW,
                   metrics: PoolMetrics | None = None) -> AccountPool:
        nc = await self.conn(i)
        started = AccountPool(nc.jetstream(), pool, specs, holder=f"replica-{i}", policy=policy, metrics=metrics)
        await started.start()
        self.pools.append(started)
        return started


@pytest_asyncio.fixture
async def replicas(private_nats: Proc) -> AsyncIterator[Replicas]:
    made = Replicas(private_nats.url)
    yield made
    for pool in made.pools:
        await pool.stop()
    for nc in made.conns:
        if not nc.is_closed:
            await nc.close()


def new_pool() -> str:
    return f"web{next(_pools)}"


async def eventually(condition: Callable[[], bool], within: float = 5.0) -> None:
    """Until `condition` holds (a watch delivering to another replica), bounded."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, "condition never held"
        await asyncio.sleep(0.005)


class KvTraffic:
    """Counts the KV requests of one pool as the server routes them: CAS writes on `$KV.…` and
    JetStream API calls (gets) naming the bucket, seen by a subscriber on another connection."""

    def __init__(self, nc: NATS, pool: str) -> None:
        self.nc = nc
        self.pool = pool
        self.writes = 0
        self.api = 0

    async def start(self) -> None:
        await self.nc.subscribe(f"$KV.{ACCOUNTS_BUCKET}.{self.pool}.>", cb=self._write)
        await self.nc.subscribe("$JS.API.>", cb=self._api)
        await self.nc.flush()

    async def _write(self, msg: Msg) -> None:
        self.writes += 1

    async def _api(self, msg: Msg) -> None:
        if ACCOUNTS_BUCKET in msg.subject and f".{self.pool}." in msg.subject + ".":
            self.api += 1

    async def take(self) -> tuple[int, int]:
        await self.nc.flush()  # everything routed before this PONG has reached us
        counts = (self.writes, self.api)
        self.writes = self.api = 0
        return counts


# ---- sharing between replicas


async def test_two_replicas_never_hold_an_account_twice(replicas: Replicas, caplog: pytest.LogCaptureFixture) -> None:
    name = new_pool()
    pools = [await replicas.pool(i, name, THREE) for i in range(2)]
    traffic = KvTraffic(await replicas.conn(2), name)
    await traffic.start()
    held: dict[str, str] = {}
    overlaps: list[str] = []
    used: Counter[str] = Counter()
    rounds = 25

    async def loop(pool: AccountPool, who: str) -> None:
        for _ in range(rounds):
            lease = await pool.acquire(None, timeout=10, job=who)  # jobs: their leases end with them
            if lease.name in held:
                overlaps.append(f"{lease.name} held by {held[lease.name]} and {who}")
            held[lease.name] = who
            used[lease.name] += 1
            await asyncio.sleep(0.001)  # the turn itself: other loops run meanwhile
            held.pop(lease.name, None)  # before the release: the next holder may win while it is in flight
            await lease.release(Outcome.ok())

    await asyncio.gather(*(loop(pools[i % 2], f"replica-{i % 2}/loop-{i}") for i in range(8)))
    assert overlaps == []
    # lost races are told by the watch in time: no replica gave up on it and read the KV again
    assert [r.getMessage() for r in caplog.records if r.name == "switchyard.account_pool"] == []
    assert sum(used.values()) == 8 * rounds
    assert set(used) == {"a", "b", "c"}
    writes, _ = await traffic.take()
    # contended: 8 loops over 3 accounts lose races, but a replica's waiters do not race each other
    # for one account (one claim per account per replica), so a handoff costs about one lost CAS
    print(f"\ncontended: {sum(used.values())} acquire+release pairs, {writes} KV writes, used {dict(used)}")
    assert writes < 3.5 * sum(used.values())


async def test_sequential_acquires_cycle_least_recently_used(replicas: Replicas) -> None:
    name = new_pool()
    one, two = await replicas.pool(0, name, THREE), await replicas.pool(1, name, THREE)
    order = []
    for i in range(6):
        pool = one if i % 2 == 0 else two  # alternate replicas: the order is shared, not local
        await eventually(lambda: all(v.state == "free" for v in pool.accounts()))  # noqa: B023  # awaited here
        lease = await pool.acquire(None, timeout=1)
        order.append(lease.name)
        await lease.release(Outcome.ok())
    assert sorted(order[:3]) == ["a", "b", "c"]
    assert order[3:] == order[:3]


async def test_a_dead_holders_account_frees_after_the_lease_ttl(replicas: Replicas) -> None:
    name = new_pool()
    policy = PoolPolicy(lease_ttl=0.6)
    doomed = await replicas.pool(0, name, [AccountSpec("a")], policy)
    survivor = await replicas.pool(1, name, [AccountSpec("a")], policy)
    lease = await doomed.acquire(None, timeout=1)
    taken = time.monotonic()
    await lease._stop_renewal()  # the process dies: no renewal, no release
    await (await replicas.conn(0)).close()
    await eventually(lambda: survivor.accounts()[0].state == "leased")
    with pytest.raises(PoolBusy) as busy:
        await survivor.acquire(None, timeout=0.1)
    assert busy.value.retry_after is None  # merely leased: nothing known to wait for
    second = await survivor.acquire(None, timeout=3)
    waited = time.monotonic() - taken
    assert second.name == "a"
    assert 0.55 <= waited < 1.5, waited
    await second.release(Outcome.ok())


async def test_renewal_keeps_a_long_turn_and_a_lost_lease_is_flagged(replicas: Replicas) -> None:
    name = new_pool()
    policy = PoolPolicy(lease_ttl=0.3)
    holder = await replicas.pool(0, name, [AccountSpec("a")], policy)
    other = await replicas.pool(1, name, [AccountSpec("a")], policy)
    lease = await holder.acquire(None, timeout=1)
    with pytest.raises(PoolBusy):  # three TTLs later it is still held: renewed every ttl/3
        await other.acquire(None, timeout=0.9)
    assert not lease.lost.is_set()
    # a stalled holder (its renewals stop) loses the account to another replica, and is told
    assert lease._renewal is not None
    await lease._stop_renewal()
    taken = await other.acquire(None, timeout=2)
    lease._start_renewal()
    await asyncio.wait_for(lease.lost.wait(), 1)
    await lease.release(Outcome.ok())  # must not clear the new holder's lease
    await eventually(lambda: holder.accounts()[0].state == "leased")
    with pytest.raises(PoolBusy):
        await holder.acquire(None, timeout=0.05)
    await taken.release(Outcome.ok())


async def test_a_waiting_acquire_wakes_when_another_replica_releases(replicas: Replicas) -> None:
    name = new_pool()
    one = await replicas.pool(0, name, [AccountSpec("a")])
    two = await replicas.pool(1, name, [AccountSpec("a")])
    latencies = []
    for i in range(15):
        giver, taker = (one, two) if i % 2 == 0 else (two, one)
        lease = await giver.acquire(None, timeout=1)
        await eventually(lambda: taker.accounts()[0].state == "leased")  # noqa: B023  # awaited here
        waiting = asyncio.create_task(taker.acquire(None, timeout=5))
        await asyncio.sleep(0)  # it runs to its wait: the pick is synchronous, and found nothing free
        assert not waiting.done()
        released = time.perf_counter()
        await lease.release(Outcome.ok())
        got = await waiting
        latencies.append(time.perf_counter() - released)
        await got.release(Outcome.ok())
    ms = sorted(x * 1000 for x in latencies)
    print(f"\nhandoff release→acquire across replicas: median {statistics.median(ms):.2f} ms, max {ms[-1]:.2f} ms")
    assert statistics.median(ms) < 50


async def test_a_replica_waiting_for_one_account_gets_it_from_an_idle_holder_first(replicas: Replicas) -> None:
    """A follow-up needs the account its conversation lives on. Another replica holds it idle for
    its next job: the waiter asks for it (`wanted`), the holder gives it up, and no third acquirer
    takes it in between."""
    name = new_pool()
    holder = await replicas.pool(0, name, [AccountSpec("a"), AccountSpec("b")])
    waiter = await replicas.pool(1, name, [AccountSpec("a"), AccountSpec("b")])
    idle = await holder.acquire(None, timeout=1)  # least recently used: "a"
    other = await holder.acquire(None, timeout=1)
    await eventually(lambda: all(v.state == "leased" for v in waiter.accounts()))
    wanted = asyncio.create_task(waiter.acquire_named(idle.name, None, timeout=5))
    await asyncio.wait_for(idle.wanted.wait(), 2)  # the holder learns it through its watch
    assert not other.wanted.is_set()
    await other.release(Outcome.ok())  # "b" frees: a plain acquire takes it, never the wanted "a"
    await idle.release(Outcome.neutral())
    plain = await holder.acquire(None, timeout=1)
    got = await asyncio.wait_for(wanted, 2)
    assert got.name == idle.name and plain.name == other.name
    await asyncio.gather(got.release(Outcome.ok()), plain.release(Outcome.ok()))


async def test_busy_when_cooling_says_when_to_retry(replicas: Replicas) -> None:
    pool = await replicas.pool(0, new_pool(), [AccountSpec("a")])
    lease = await pool.acquire(None, timeout=1)
    await lease.release(Outcome(Verdict.RATE_LIMITED, clears_in=2.0))
    started = time.monotonic()
    with pytest.raises(PoolBusy) as busy:
        await pool.acquire(None, timeout=0.2)
    assert 0.19 <= time.monotonic() - started < 1.0
    assert busy.value.retry_after is not None and 1.5 < busy.value.retry_after <= 1.8 + 0.05
    soonest = pool.soonest_free()
    assert soonest is not None and 1.0 < soonest - time.time() <= 2.0


# ---- health


async def test_each_verdict_changes_the_account_as_specified(replicas: Replicas) -> None:
    policy = PoolPolicy(cooldown=20.0, cloudflare_cooldown=10.0, max_cooldown=100.0, failures_to_cool=3)
    names = ["ok", "neutral", "model", "whole", "backoff", "cf", "expired", "invalid", "fail"]
    pool = await replicas.pool(0, new_pool(), [AccountSpec(n) for n in names], policy)

    async def use(name: str, outcome: Outcome) -> None:
        lease = await pool.acquire_named(name, None, timeout=1)
        await lease.release(outcome)

    def view(name: str) -> Any:
        return next(v for v in pool.accounts() if v.name == name)

    now = time.time()
    await use("ok", Outcome(Verdict.FAILURE))
    await use("ok", Outcome.ok())  # a streak of one, cleared: two more failures do not cool it
    await use("ok", Outcome(Verdict.FAILURE))
    await use("ok", Outcome(Verdict.FAILURE))
    assert view("ok").state == "free"
    await use("neutral", Outcome.neutral())
    assert view("neutral").state == "free" and view("neutral").level == 0
    await use("model", Outcome(Verdict.RATE_LIMITED, model="gpt-4o", clears_in=30))
    assert view("model").state == "free" and set(view("model").model_cooldowns) == {"gpt-4o"}
    assert not pool.eligible("model", "gpt-4o") and pool.eligible("model", "gpt-4o-mini")
    await use("whole", Outcome(Verdict.RATE_LIMITED, clears_in=30, reason="usage cap"))
    assert (view("whole").state, view("whole").reason, view("whole").level) == ("cooling", "usage cap", 0)
    assert 29 < view("whole").until - now < 31
    await use("backoff", Outcome(Verdict.RATE_LIMITED))  # no clears_in: the policy's cooldown, escalating
    assert view("backoff").state == "cooling" and view("backoff").level == 1
    assert 19 < view("backoff").until - now < 21
    await use("cf", Outcome(Verdict.CLOUDFLARE))
    assert view("cf").state == "cooling" and view("cf").level == 1 and 9 < view("cf").until - now < 11
    await use("expired", Outcome(Verdict.AUTH_EXPIRED, reason="token expired"))
    await use("invalid", Outcome(Verdict.AUTH_INVALID))
    assert (view("expired").state, view("expired").reason) == ("quarantined", "token expired")
    assert (view("invalid").state, view("invalid").reason) == ("quarantined", "auth_invalid")
    for _ in range(2):
        await use("fail", Outcome(Verdict.FAILURE))
    assert view("fail").state == "free"
    await use("fail", Outcome(Verdict.FAILURE, reason="502s"))
    assert (view("fail").state, view("fail").reason, view("fail").level) == ("cooling", "502s", 1)
    assert 19 < view("fail").until - now < 21
    # cooling and quarantined accounts are not handed out; the others are
    for name in ("whole", "backoff", "cf", "fail"):
        with pytest.raises(PoolBusy):
            await pool.acquire_named(name, None, timeout=0.01)
    for name in ("expired", "invalid"):
        with pytest.raises(AccountGone):
            await pool.acquire_named(name, None, timeout=1)
    got = {(await pool.acquire(None, timeout=1, exclude=("ok",))).name for _ in range(2)}
    assert got == {"neutral", "model"}


async def test_half_open_after_a_cooldown(replicas: Replicas) -> None:
    policy = PoolPolicy(cooldown=0.3, max_cooldown=0.6, failures_to_cool=2)
    pool = await replicas.pool(0, new_pool(), [AccountSpec("a")], policy)

    async def fail() -> None:
        await (await pool.acquire(None, timeout=1)).release(Outcome(Verdict.FAILURE))

    async def wait_free() -> float:
        started = time.monotonic()
        lease = await pool.acquire(None, timeout=3)  # woken by a timer at the cooldown's end
        waited = time.monotonic() - started
        await lease.release(Outcome.neutral())
        return waited

    await fail()
    await fail()
    assert pool.accounts()[0].state == "cooling"
    assert 0.2 < await wait_free() < 0.5
    assert pool.accounts()[0].level == 1  # half-open: eligible, backoff kept
    await fail()  # one failure is enough now, and it cools for twice as long
    assert pool.accounts()[0].state == "cooling" and pool.accounts()[0].level == 2
    assert 0.5 < await wait_free() < 0.8
    await fail()  # capped at max_cooldown
    assert 0.5 < await wait_free() < 0.8
    await (await pool.acquire(None, timeout=1)).release(Outcome.ok())
    assert pool.accounts()[0].level == 0
    await fail()  # a streak starts again from nothing
    assert pool.accounts()[0].state == "free"


async def test_model_permissions_and_per_model_cooldown(replicas: Replicas) -> None:
    specs = [AccountSpec("plus", models=frozenset({"gpt-4o", "gpt-4o-mini"})), AccountSpec("free-tier",
             models=frozenset({"gpt-4o-mini"}))]
    pool = await replicas.pool(0, new_pool(), specs)
    with pytest.raises(NoEligibleAccount):
        await pool.acquire("o1-pro", timeout=5)  # at once: nobody permits it
    plus = await pool.acquire("gpt-4o", timeout=1)
    assert plus.name == "plus"
    with pytest.raises(PoolBusy) as busy:
        await pool.acquire("gpt-4o", timeout=0.05)  # free-tier is free but may not serve it
    assert busy.value.retry_after is None
    assert (await pool.acquire("gpt-4o-mini", timeout=1)).name == "free-tier"
    await plus.release(Outcome(Verdict.RATE_LIMITED, model="gpt-4o", clears_in=60))
    with pytest.raises(PoolBusy) as busy:
        await pool.acquire("gpt-4o", timeout=0.05)
    assert busy.value.retry_after is not None and 55 < busy.value.retry_after <= 60
    again = await pool.acquire("gpt-4o-mini", timeout=1)  # its other model is unaffected
    assert again.name == "plus"
    await again.release(Outcome.ok())
    assert not pool.eligible("plus", "gpt-4o") and pool.eligible("plus", "gpt-4o-mini")
    assert not pool.eligible("free-tier", "gpt-4o") and not pool.eligible("nobody", None)
    await pool.quarantine("plus", "banned")
    with pytest.raises(NoEligibleAccount):
        await pool.acquire("gpt-4o", timeout=5)  # its only server is quarantined


async def test_quarantine_restore_fingerprint_and_a_restart(replicas: Replicas) -> None:
    name = new_pool()
    v1 = [AccountSpec("a", fingerprint="fp1"), AccountSpec("b", fingerprint="fp1")]
    pool = await replicas.pool(0, name, v1)
    with pytest.raises(AccountGone):
        await pool.quarantine("ghost", "no such account")
    with pytest.raises(AccountGone):
        await pool.acquire_named("ghost", None, timeout=1)
    await pool.quarantine("a", "operator says so")
    assert (pool.accounts()[0].state, pool.accounts()[0].reason) == ("quarantined", "operator says so")
    with pytest.raises(AccountGone):
        await pool.acquire_named("a", None, timeout=1)
    await pool.restore("a")
    assert pool.accounts()[0].state == "free"
    lease = await pool.acquire_named("a", None, timeout=1)
    await lease.release(Outcome(Verdict.AUTH_INVALID, reason="account deactivated"))
    lease = await pool.acquire_named("b", None, timeout=1)
    await lease.release(Outcome(Verdict.CLOUDFLARE))
    await pool.stop()

    # the same credentials on every replica that restarts: the state is read back, quarantine stays
    again = await replicas.pool(1, name, v1)
    views = {v.name: v for v in again.accounts()}
    assert (views["a"].state, views["a"].reason) == ("quarantined", "account deactivated")
    assert views["b"].state == "cooling" and views["b"].level == 1
    await again.stop()
    # new credentials for a: its quarantine is lifted at start, b is left as it is
    renewed = await replicas.pool(0, name, [AccountSpec("a", fingerprint="fp2"), AccountSpec("b", fingerprint="fp1")])
    views = {v.name: v for v in renewed.accounts()}
    assert views["a"].state == "free" and views["b"].state == "cooling"
    assert (await renewed.acquire_named("a", None, timeout=1)).name == "a"


# ---- cost and metrics


async def test_kv_round_trips_per_acquire_and_release(replicas: Replicas) -> None:
    name = new_pool()
    pool = await replicas.pool(0, name, THREE)
    await replicas.pool(1, name, THREE)  # another replica watching changes nothing
    traffic = KvTraffic(await replicas.conn(2), name)
    await traffic.start()
    for _ in range(6):
        lease = await pool.acquire(None, timeout=1)
        assert await traffic.take() == (1, 0)  # one compare-and-set, no read
        await lease.release(Outcome.ok())
        assert await traffic.take() == (1, 0)
    lease = await pool.acquire_named("a", None, timeout=1)
    assert await traffic.take() == (1, 0)
    assert await pool._renew(lease)  # what the background renewal does every lease_ttl/3
    assert await traffic.take() == (1, 0)
    await lease.release(Outcome(Verdict.FAILURE))
    assert await traffic.take() == (1, 0)
    await pool.quarantine("b", "test")
    await pool.restore("b")
    assert await traffic.take() == (2, 0)


async def test_gauges_count_accounts_by_state_and_outcomes_by_verdict(replicas: Replicas) -> None:
    registry = CollectorRegistry()
    name = new_pool()
    pool = await replicas.pool(0, name, [*THREE, AccountSpec("d")], metrics=PoolMetrics(registry, name))

    def gauge(state: str) -> float:
        return metric(generate_latest(registry).decode(), "switchyard_pool_accounts", pool=name, state=state)

    assert [gauge(s) for s in ("free", "leased", "cooling", "quarantined")] == [4, 0, 0, 0]
    held = await pool.acquire_named("a", None, timeout=1)
    cooled = await pool.acquire_named("b", None, timeout=1)
    await cooled.release(Outcome(Verdict.RATE_LIMITED, clears_in=0.3))
    await pool.quarantine("c", "test")
    assert [gauge(s) for s in ("free", "leased", "cooling", "quarantined")] == [1, 1, 1, 1]
    await held.release(Outcome.ok())
    await held.release(Outcome.ok())  # idempotent: counted and written once
    await eventually(lambda: gauge("cooling") == 0, within=2)  # a cooldown ends with no write: read at scrape
    assert gauge("free") == 3
    text = generate_latest(registry).decode()
    assert metric(text, "switchyard_pool_outcomes_total", pool=name, verdict="ok") == 1
    assert metric(text, "switchyard_pool_outcomes_total", pool=name, verdict="rate_limited") == 1
    assert "\"a\"" not in text and "\"b\"" not in text  # never an account in a label


async def test_a_vanished_bucket_is_made_again_by_every_replica(replicas: Replicas) -> None:
    name = new_pool()
    specs = [AccountSpec("a"), AccountSpec("b")]
    pool, other = await replicas.pool(0, name, specs), await replicas.pool(1, name, specs)
    first = await pool.acquire_named("a", None, timeout=1)
    admin = await replicas.conn(2)
    await admin.jetstream().delete_key_value(ACCOUNTS_BUCKET)  # a restarted NATS loses in-memory buckets
    await first.release(Outcome(Verdict.CLOUDFLARE))  # finds no bucket: makes it again, writes afresh
    assert {v.name: v.state for v in pool.accounts()} == {"a": "cooling", "b": "free"}
    # the other replica's CAS on its old revisions fails and its watch saw nothing: it reads again
    started = time.monotonic()
    lease = await other.acquire(None, timeout=5)
    assert lease.name == "b" and time.monotonic() - started < 3
    await lease.release(Outcome.ok())


async def test_release_never_raises_on_a_closed_connection(replicas: Replicas) -> None:
    pool = await replicas.pool(0, new_pool(), [AccountSpec("a")])
    lease = await pool.acquire(None, timeout=1)
    await (await replicas.conn(0)).close()  # the bus is gone under the holder
    await asyncio.wait_for(lease.release(Outcome.ok()), 5)  # logged, not raised


# ---- conversations


async def test_conversation_records_and_owners(private_nc: NATS) -> None:
    conversations = ConversationMap(private_nc.jetstream(), ttl=1.0)
    turn = [{"role": "user", "content": "hello"}]
    answered = [*turn, {"role": "assistant", "content": "Hi! How can I help?"}]
    await conversations.put("web", transcript_key(answered), {"conversation_id": "c-1", "parent": "m-2"})
    follow_up = [*answered, {"role": "user", "content": "tell me more"}]
    assert await conversations.get("web", transcript_key(follow_up[:-1])) == {"conversation_id": "c-1",
                                                                              "parent": "m-2"}
    assert await conversations.get("other-pool", transcript_key(answered)) is None
    assert await conversations.get("web", transcript_key(turn)) is None
    await conversations.put_owner("web", "c-1", "account-7")
    assert await conversations.owner("web", "c-1") == "account-7"
    await conversations.put_owner("web", "odd id. with dots/and spaces", "account-8")  # not a valid key as is
    assert await conversations.owner("web", "odd id. with dots/and spaces") == "account-8"
    assert await conversations.owner("web", "odd id") is None
    assert await conversations.owner("web", "c-2") is None


async def test_conversation_records_expire_after_the_ttl(private_nc: NATS) -> None:
    conversations = ConversationMap(private_nc.jetstream(), ttl=1.0)
    key = transcript_key([{"role": "user", "content": "expire me"}])
    await conversations.put("web", key, {"conversation_id": "c-9"})
    stored = time.monotonic()
    assert await conversations.get("web", key) is not None
    deadline = stored + 5
    while await conversations.get("web", key) is not None:
        assert time.monotonic() < deadline, "never expired"
        await asyncio.sleep(0.05)
    assert time.monotonic() - stored >= 0.9


def test_transcript_key_normalises_content() -> None:
    text: list[dict[str, Any]] = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "two\nlines"}]
    parts: list[dict[str, Any]] = [{"role": "system", "content": [{"type": "text", "text": "be brief"}]},
             {"role": "user", "content": [{"type": "text", "text": "two"},
                                          {"type": "image_url", "image_url": {"url": "data:,"}},
                                          {"type": "text", "text": "lines"}]}]
    assert transcript_key(text) == transcript_key(parts)
    trimmed = [text[0], {"role": "user", "content": "  two\nlines\n"}]
    assert transcript_key(trimmed) == transcript_key(text)
    assert transcript_key(text) != transcript_key([text[0], {"role": "assistant", "content": "two\nlines"}])
    assert transcript_key(text) != transcript_key(text[:1])
    assert transcript_key([{"role": "assistant", "content": None, "tool_calls": []}]) == transcript_key(
        [{"role": "assistant", "content": ""}])
    key = transcript_key(text)
    assert len(key) == 64 and all(c in "0123456789abcdef" for c in key)


# ---- the bus contract


async def test_kv_traffic_matches_the_contract(nats_server: Proc, wiretap: Wiretap) -> None:
    """On the session's server, under the wiretap: the KV subjects are in proto/subjects.toml."""
    seen = wiretap.seen["system"]
    nc = await nats.connect(nats_server.url)
    try:
        pool = AccountPool(nc.jetstream(), new_pool(), [AccountSpec("a")], holder="tap", policy=SLOW)
        await pool.start()
        await (await pool.acquire(None, timeout=1)).release(Outcome.ok())
        await pool.stop()
        conversations = ConversationMap(nc.jetstream(), ttl=60)
        await conversations.put("web", "k", {"conversation_id": "c"})
        assert await conversations.get("web", "k") == {"conversation_id": "c"}
    finally:
        await nc.close()
    # the tap (its own connection) has seen the writes; the session fails on any violation too
    await eventually(lambda: wiretap.seen["system"] >= seen + 4)
    assert [v for v in wiretap.violations if "$KV" in v or "KV_" in v] == []
