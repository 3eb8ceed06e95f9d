"""A managed key's limits on this edge, shared with every replica through SY_V1_KEY_LIMITS
(the arithmetic is libs/quota.py's; this is its I/O).

Each key with limits has a local state: what this edge claimed from the key's shared record and
has not spent. A request admitted from it costs dict lookups and arithmetic (`KeyState.take`).
When it does not suffice the request waits on the key's ONE claim in flight (a compare-and-set
on the key's entry): every request that came meanwhile joins the next claim, never one CAS each.
A background tick pays token debts, gives spare quota back when the key is idle, and renews the
concurrency slots this edge holds (a dead edge's slots lapse after `ttl`).

NATS or its KV unreachable: the limits fail open (the request is admitted and counted locally,
flushed once the KV answers again; a log line and `switchyard_edge_limit_claims_total{result="error"}`).
A claim never holds a request past `claim_timeout`; and with the bus down the request fails at
its publish anyway, with the bus's own 503: refusing it here would say less.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from prometheus_client import CollectorRegistry

import proto
from libs import quota
from libs.errors import KeyConcurrencyLimited, KeyQuotaExceeded, KeyRateLimited, ModelNotAllowed, SwitchyardError
from libs.keys import KeyRecord
from libs.kv_buckets import ensure_kv
from libs.loop_metrics import Counter
from libs.quota import KeyState, Need, Refusal, Shared
from libs.settings import env_float
from services.edge.caller import Caller

if TYPE_CHECKING:
    from services.edge.routes.job_route import Answering

log = logging.getLogger("switchyard.edge.limits")

LIMITS_BUCKET: str = proto.contract()["kv_buckets"]["key_limits"]["name"]
_CAS_ATTEMPTS = 16  # a claim races only with the other edges' claims on the same key
_BUDGET_RETRY = 24 * 3600.0  # a spent total budget never renews by itself: Retry-After says "not soon"
_LOG_EVERY = 10.0  # a KV outage is said at most this often
RATE_LIMIT_HEADERS = tuple(f"x-ratelimit-{what}-{unit}" for unit in ("requests", "tokens")
                           for what in ("limit", "remaining", "reset"))
REFUSAL_LIMITS = ("model", "rpm", "tpm", "budget_period", "budget_total", "concurrency")


async def ensure_limits_bucket(js: JetStreamContext) -> KeyValue:
    """On disk, one revision per key: budgets outlive an edge and a NATS restart."""
    return await ensure_kv(js, LIMITS_BUCKET, "API keys' shared limit counters")


async def start_limits(js: JetStreamContext, edge_id: str, registry: CollectorRegistry) -> KeyLimits:
    """The edge's limiter on the bucket, its times scaled by SY_TIME_SCALE like every service limit."""
    scale = env_float("SY_TIME_SCALE", 1.0)
    limiter = KeyLimits(await ensure_limits_bucket(js), edge_id, registry, ttl=15.0 * scale,
                        tick=max(0.02, 1.0 * scale), idle=2.0 * scale, claim_timeout=max(0.2, 0.5 * scale))
    limiter.start()
    return limiter


class _Key:
    """One key's local state, its claim machinery and the shared record as last seen."""

    __slots__ = ("give_back", "id", "maintain", "record", "rev", "shared", "state", "task", "waiters")

    def __init__(self, record: KeyRecord, limits: quota.Limits) -> None:
        self.id = record.id
        self.record = record
        self.state = KeyState(limits)
        self.waiters: list[tuple[Need, asyncio.Future[Refusal | None]]] = []
        self.task: asyncio.Task[None] | None = None  # the claim in flight
        self.maintain = False  # a claim with no waiter is due (debt, slot release, renewal)
        self.give_back = False
        self.rev: int | None = None  # the entry's revision as last seen; None: read it first; 0: none yet
        self.shared = Shared()


class Admission:
    """What a request reserved, for `settle`."""

    __slots__ = ("key", "slot", "starts", "tokens")

    def __init__(self, key: _Key, tokens: int, starts: tuple[float | None, ...], slot: bool) -> None:
        self.key = key
        self.tokens = tokens
        self.starts = starts
        self.slot = slot


def _limits_of(record: KeyRecord) -> quota.Limits:
    return quota.Limits.of(record.rpm, record.tpm, record.budget_total, record.budget_period_tokens,
                           record.budget_period_seconds, record.max_concurrent)


def _model_allowed(patterns: list[str], model: str) -> bool:
    return any(fnmatch.fnmatchcase(model, p) for p in patterns)


def refusal_error(refusal: Refusal) -> SwitchyardError:
    message = quota.refusal_message(refusal)
    if refusal.limit in ("rpm", "tpm"):
        return KeyRateLimited(message, retry_after=max(1.0, refusal.retry_after),
                              kind="requests" if refusal.limit == "rpm" else "tokens")
    if refusal.limit == "budget_period":
        return KeyQuotaExceeded(message, retry_after=max(1.0, refusal.retry_after))
    if refusal.limit == "budget_total":
        return KeyQuotaExceeded(message, retry_after=_BUDGET_RETRY)
    return KeyConcurrencyLimited(message, retry_after=max(1.0, refusal.retry_after))


class KeyLimits:
    """The edge's `Limiter` (ledger.py)."""

    def __init__(self, kv: KeyValue, edge_id: str, registry: CollectorRegistry, *, ttl: float = 15.0,
                 tick: float = 1.0, idle: float = 2.0, claim_timeout: float = 0.5,
                 clock: Callable[[], float] = time.time) -> None:
        self.kv = kv
        self.edge_id = edge_id
        self.ttl = ttl
        self.tick = tick
        self.idle = idle
        self.claim_timeout = claim_timeout
        self.clock = clock
        self._keys: dict[str, _Key | None] = {}  # key id -> state (None: the key has no limits)
        self._records: dict[str, KeyRecord] = {}  # key id -> the record its state was made from
        self._ticker: asyncio.Task[None] | None = None
        self._logged_at = 0.0
        refusals = Counter("switchyard_edge_limit_refusals_total", "Requests a managed key's limits refused",
                           ["limit"], registry=registry)
        self._refusals = {name: refusals.labels(limit=name) for name in REFUSAL_LIMITS}
        claims = Counter("switchyard_edge_limit_claims_total",
                         "Compare-and-sets on SY_V1_KEY_LIMITS by outcome (ok, conflict, error)",
                         ["result"], registry=registry)
        self._claims = {r: claims.labels(result=r) for r in ("ok", "conflict", "error")}

    def start(self) -> None:
        self._ticker = asyncio.create_task(self._tick_loop(), name="key limits")

    async def stop(self) -> None:
        """Give spare quota and slots back (bounded), so a restart loses none of a budget."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        keys = [k for k in self._keys.values() if k is not None and (k.state.spare() or k.state.has_debt())]
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.gather(*(self._cas(k, [], give_back=True) for k in keys),
                                                  return_exceptions=True), self.claim_timeout * 4)

    # -- the hot path

    def _key(self, record: KeyRecord) -> _Key | None:
        known = self._records.get(record.id)
        if known is record:
            return self._keys[record.id]
        # a key seen first, or its record changed (an admin's update): its limits again
        limits = _limits_of(record)
        key = self._keys.get(record.id)
        if limits.empty:
            key = None
        elif key is None:
            key = _Key(record, limits)
        else:
            key.state.limits = limits
        self._keys[record.id] = key
        self._records[record.id] = record
        return key

    async def admit(self, caller: Caller, answering: Answering) -> None:
        record = caller.record
        if record is None:
            return  # a static key: never limited
        if record.models is not None and not _model_allowed(record.models, answering.model):
            self._refusals["model"].inc()
            raise ModelNotAllowed(answering.model)
        key = self._key(record)
        if key is None:
            return
        state = key.state
        limits = state.limits
        tokens = 0
        if limits.counts_tokens:
            output = answering.reserve_output
            tokens = answering.reserve_prompt + (quota.DEFAULT_OUTPUT_RESERVE if output is None else output)
        need = Need(tokens)
        now = self.clock()
        if not state.take(need, now):
            refusal = await self._wait(key, need)
            now = self.clock()
            if refusal is not None:
                self._refusals[refusal.limit].inc()
                if limits.rpm is not None or limits.tpm is not None:
                    answering.headers += state.headers(now)
                raise refusal_error(refusal)
        answering.admission = Admission(key, tokens, tuple(state.start), limits.concurrent is not None)
        if limits.rpm is not None or limits.tpm is not None:
            answering.headers += state.headers(now)

    def settle(self, caller: Caller, answering: Answering, status: int) -> None:
        admission = answering.admission
        if not isinstance(admission, Admission):
            return
        key = admission.key
        used = answering.prompt_tokens + answering.completion_tokens if admission.tokens else 0
        debt = key.state.settle(admission.tokens, used, admission.starts, admission.slot)
        if key.state.spare_slots_to_give():
            self._maintain(key)  # near the concurrency limit: another edge may be waiting for it
        elif debt and key.task is None:
            key.maintain = True  # the tick charges it (a stream's overrun), not this request's end

    # -- claims

    async def _wait(self, key: _Key, need: Need) -> Refusal | None:
        future: asyncio.Future[Refusal | None] = asyncio.get_running_loop().create_future()
        key.waiters.append((need, future))
        if key.task is None:
            key.task = asyncio.create_task(self._claim_loop(key))
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled() and future.result() is None:
                # admitted while its request went away: nothing will settle it, so here
                key.state.settle(need.tokens, 0, tuple(key.state.start), key.state.limits.concurrent is not None)
            raise

    def _maintain(self, key: _Key, give_back: bool = False) -> None:
        key.maintain = True
        key.give_back = key.give_back or give_back
        if key.task is None:
            key.task = asyncio.create_task(self._claim_loop(key))

    async def _claim_loop(self, key: _Key) -> None:
        """The key's one claim in flight, again while requests wait or upkeep is due."""
        try:
            while True:
                now = self.clock()
                batch = []
                for need, future in key.waiters:
                    if future.cancelled():
                        continue
                    if key.state.take(need, now):  # the last claim's prefetch covers it
                        future.set_result(None)
                    else:
                        batch.append((need, future))
                key.waiters = []
                if batch:
                    await self._claim_for(key, batch)
                elif key.maintain:
                    give_back, key.maintain, key.give_back = key.give_back, False, False
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(self._cas(key, [], give_back=give_back), self.claim_timeout)
                else:
                    return
        finally:
            key.task = None

    async def _claim_for(self, key: _Key, batch: list[tuple[Need, asyncio.Future[Refusal | None]]]) -> None:
        needs = [need for need, _ in batch]
        try:
            refusals = await asyncio.wait_for(self._cas(key, needs), self.claim_timeout)
        except Exception as exc:  # the KV's outage, whatever its shape: fail open
            self._claims["error"].inc()
            now = self.clock()
            if now - self._logged_at > _LOG_EVERY:
                self._logged_at = now
                log.warning("key limits: the shared counters are unreachable (%s); admitting on this "
                            "edge's own count until they answer", type(exc).__name__)
            for need in needs:
                key.state.take_anyway(need, now)
            key.maintain = True  # the local count goes to the KV once it answers
            refusals = [None] * len(needs)
        for (_, future), refusal in zip(batch, refusals, strict=True):
            if not future.done():
                future.set_result(refusal)
            elif refusal is None:  # admitted, but its request is gone
                key.state.settle(future_need(batch, future), 0, tuple(key.state.start),
                                 key.state.limits.concurrent is not None)

    async def _cas(self, key: _Key, needs: list[Need], give_back: bool = False) -> list[Refusal | None]:
        """One claim on the key's shared record: read it only when the last revision seen is stale."""
        for _ in range(_CAS_ATTEMPTS):
            if key.rev is None:
                try:
                    entry = await self.kv.get(key.id)
                    key.shared, key.rev = Shared.decode(entry.value), entry.revision or 0
                except KeyNotFoundError:
                    key.shared, key.rev = Shared(), 0
            now = self.clock()
            result = quota.claim(key.shared, key.state, needs, edge=self.edge_id, now=now, ttl=self.ttl,
                                 give_back=give_back)
            try:
                revision = await self.kv.update(key.id, result.shared.encode(), last=key.rev)
            except KeyWrongLastSequenceError:
                self._claims["conflict"].inc()
                key.rev = None  # another edge wrote first: read its record, claim again
                continue
            self._claims["ok"].inc()
            key.shared, key.rev = result.shared, revision
            result.apply(key.state)
            quota.reset_rate(key.state, now)
            quota.consume_claimed(key.state, [n for n, r in zip(needs, result.refusals, strict=True) if r is None],
                                  now)
            return result.refusals
        raise RuntimeError("too many concurrent claims on one key")

    # -- upkeep

    async def _tick_loop(self) -> None:
        renew_every = self.ttl / 3
        renewed: dict[str, float] = {}
        while True:
            await asyncio.sleep(self.tick)
            now = self.clock()
            for key in list(self._keys.values()):
                if key is None or key.task is not None:
                    continue
                state = key.state
                idle = now - state.last_used > self.idle
                if state.has_debt() or key.maintain:
                    self._maintain(key)
                elif idle and state.in_use == 0 and state.spare():
                    self._maintain(key, give_back=True)
                elif state.held > 0 and now - renewed.get(key.id, 0.0) > renew_every:
                    self._maintain(key)
                else:
                    continue
                renewed[key.id] = now


def future_need(batch: list[tuple[Need, asyncio.Future[Refusal | None]]],
                future: asyncio.Future[Refusal | None]) -> int:
    return next(need.tokens for need, f in batch if f is future)
