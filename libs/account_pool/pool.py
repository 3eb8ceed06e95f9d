"""Web accounts as a pool shared by every replica of a worker pool, the state in JetStream KV.

A web-chat account takes one turn at a time. Its state (lease, cooldowns, quarantine) is the value
of key `{pool}.{account}` in the KV bucket SY_V1_ACCOUNTS (proto/subjects.toml); no process holds
the truth, and a restarted worker finds it all again. Each replica keeps a mirror of its pool's
keys, fed by a KV watch, and picks from it; every write is ONE compare-and-set on the key's
revision, so two replicas racing for an account cannot both win. Round trips:
- acquire, uncontended: 1 (the pick comes from the mirror, then the CAS); a lost race costs one
  more CAS on the next candidate, or a wait for the watch to bring the winner's write;
- release: 1 (clears the lease and applies the health outcome together);
- a lease is renewed every lease_ttl/3: 1 each.

Health, applied on release (state.py):
- OK clears the failure streak and the backoff level; NEUTRAL changes nothing.
- RATE_LIMITED with a model cools that model, without one the whole account: until now+clears_in,
  else policy.cooldown × 2^level (capped at max_cooldown), and level+1.
- CLOUDFLARE cools the whole account cloudflare_cooldown × 2^level (capped), level+1.
- AUTH_EXPIRED / AUTH_INVALID quarantine it with the reason, until an operator restores it or the
  configured credentials change (AccountSpec.fingerprint differs from the one it was quarantined under).
- FAILURE is counted within failure_window; failures_to_cool of them cool it policy.cooldown × 2^level, level+1.
- Half-open: a cooldown that ends keeps the level; the next OK resets it, the next failure cools
  the account at once, for twice as long.

Clock: the values carry wall-clock times (time.time()) that every replica compares with its own
clock, so replicas' clocks are assumed to agree within about a second (NTP); a skew of s moves
a lease expiry or a cooldown end by s, nothing worse.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

import nats.errors
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NoStreamResponseError
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

import proto
from libs import ids
from libs.account_pool.buckets import ACCOUNTS_BUCKET
from libs.account_pool.metrics import STATES, PoolMetrics
from libs.account_pool.outcome import Outcome, Verdict
from libs.account_pool.state import AccountState, PoolPolicy
from libs.kv_buckets import ensure_kv
from libs.kv_watch import stop_watch
from proto.messages import AccountsState

__all__ = [
    "AccountGone", "AccountPool", "AccountSpec", "AccountView", "Lease", "NoEligibleAccount", "PoolBusy",
    "PoolError", "PoolPolicy",
]

log = logging.getLogger("switchyard.account_pool")

_NAME = re.compile(r"[A-Za-z0-9_-]+")
_SYNC_WAIT = 10.0  # start(): the watch delivers the pool's current keys within this
_CAS_ATTEMPTS = 8  # read-modify-write retries when another writer keeps winning (bounded)
_STALE_LIMIT = 1.0  # a watch normally brings a write within milliseconds
_WAKE_SLACK = 0.002  # wake a little after a lease expiry / cooldown end, not a little before


@dataclass(frozen=True)
class AccountSpec:
    name: str  # unique in the pool, [A-Za-z0-9_-], never a secret
    models: frozenset[str] | None = None  # None: every model
    fingerprint: str = ""  # a short hash of the credentials: a changed one lifts a quarantine
    daily_budget: int | None = None  # upstream conversations a UTC day (None: unbounded)


@dataclass(frozen=True)
class AccountView:
    """One account as the operator's list shows it (no secret)."""

    name: str
    state: str  # "free" | "leased" | "cooling" | "quarantined"
    until: float | None  # unix time the lease or the cooldown ends (None: free, quarantined)
    reason: str  # why it cools or is quarantined
    model_cooldowns: dict[str, float] = field(default_factory=dict)  # model → unix end, running ones only
    level: int = 0  # backoff level (> 0: half-open, the next failure cools it for longer)
    conversations_today: int = 0  # begun this UTC day (against daily_budget, when it has one)
    daily_budget: int | None = None
    holder: str = ""  # leased: the replica (worker id) holding it


class PoolError(Exception):
    pass


class PoolBusy(PoolError):
    """No account became free within the timeout."""

    def __init__(self, retry_after: float | None) -> None:
        super().__init__("every account of the pool is busy or cooling down")
        self.retry_after = retry_after  # seconds until the soonest cooldown ends; None: all just busy


class NoEligibleAccount(PoolError):
    """No configured account could ever serve the model (none permits it, or they are quarantined)."""


class AccountGone(PoolError):
    """The named account is not configured, is quarantined, or does not serve the model."""


# a state change for AccountPool._write: (a copy of the state, its revision) → the new state, or None
Change = Callable[[AccountState, int], "AccountState | None"]


@dataclass
class _Entry:
    revision: int  # 0: the key does not exist (a CAS with last=0 creates it)
    state: AccountState


class Lease:
    """The right to use one account for one turn; renewed in the background until released."""

    def __init__(self, pool: AccountPool, name: str, lease_id: str) -> None:
        self.name = name
        self.lost = asyncio.Event()  # a renewal found the lease taken: stop using the account
        # another replica waits for this very account (a conversation lives on it): a holder that
        # keeps it idle for its next job gives it up at once
        self.wanted = asyncio.Event()
        self._pool = pool
        self.lease_id = lease_id  # in the stored value: whose lease it is
        self._released = False
        self._renewal: asyncio.Task[None] | None = None

    def _start_renewal(self) -> None:
        self._renewal = asyncio.create_task(self._renew_forever(), name=f"lease renewal {self.name}")

    async def _renew_forever(self) -> None:
        interval = self._pool.policy.lease_ttl / 3
        while True:
            await asyncio.sleep(interval)
            try:
                held = await self._pool._renew(self)
            except (nats.errors.Error, TimeoutError, PoolError) as exc:  # the next one may get through
                log.warning("renewing the lease of account %s failed: %s", self.name, type(exc).__name__)
                continue
            if not held:
                log.warning("the lease of account %s expired and was taken", self.name)
                self.lost.set()
                return

    async def _stop_renewal(self) -> None:
        if self._renewal is not None:
            self._renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewal
            self._renewal = None

    async def release(self, outcome: Outcome) -> None:
        """Clear the lease and apply the health outcome in one compare-and-set. Idempotent; a bus
        failure (a vanished bucket, NATS down) is logged, not raised: the lease then expires."""
        if self._released:
            return
        self._released = True
        await self._stop_renewal()
        self._pool._leases.discard(self)
        if self._pool.metrics is not None:
            self._pool.metrics.count_outcome(outcome.verdict)
        try:
            await self._pool._finish(self, outcome)
        except (nats.errors.Error, TimeoutError, PoolError) as exc:
            log.warning("releasing account %s failed (%s); its lease will expire", self.name, type(exc).__name__)


class AccountPool:
    def __init__(
        self, js: JetStreamContext, pool: str, accounts: Sequence[AccountSpec], *, holder: str,
        policy: PoolPolicy = PoolPolicy(), metrics: PoolMetrics | None = None,  # noqa: B008  # frozen
    ) -> None:
        proto.check_token(pool)
        specs: dict[str, AccountSpec] = {}
        for spec in accounts:
            if not _NAME.fullmatch(spec.name):
                raise ValueError(f"account name must be [A-Za-z0-9_-]+: {spec.name!r}")
            if spec.name in specs:
                raise ValueError(f"account {spec.name!r} configured twice in pool {pool}")
            specs[spec.name] = spec
        self._js = js
        self.pool = pool
        self.holder = holder
        self.policy = policy
        self.metrics = metrics
        self._specs = specs
        self._prefix = f"{pool}."
        self._kv: KeyValue | None = None
        self._mirror: dict[str, _Entry] = {}
        # account → (a revision a lost CAS proved old, when): skipped until the watch brings a newer
        # one; a watch that brings none within _STALE_LIMIT is presumed dead and the pool resyncs
        self._stale: dict[str, tuple[int, float]] = {}
        # accounts this replica has a leasing CAS in flight for: its other waiters try another one,
        # so a release costs one CAS per replica, not one per waiting caller
        self._claiming: set[str] = set()
        self._changed = asyncio.Event()  # replaced on every change; waiters hold the one they saw
        self._synced = asyncio.Event()
        self._watch_task: asyncio.Task[None] | None = None
        self._watcher: KeyValue.KeyWatcher | None = None
        self._reopening = asyncio.Lock()
        self._leases: set[Lease] = set()
        if metrics is not None:
            metrics.bind(self._state_counts)

    # ---- life cycle

    async def start(self) -> None:
        """Ensure the bucket, mirror the pool's keys, create the configured accounts that have no
        entry (live state is never overwritten), and lift quarantines whose credentials changed."""
        await self._open()
        for name, spec in self._specs.items():
            state = self._entry(name).state
            if state.quarantined and spec.fingerprint and spec.fingerprint != state.quarantined_fp:
                log.info("account %s has new credentials: lifting its quarantine", name)
                await self._write(name, _lift_if_fingerprint_changed(spec.fingerprint))

    async def resync(self) -> None:
        """Start over from the KV: the bucket made again if it vanished (a restarted NATS loses
        in-memory buckets), the mirror read afresh. Called by the pool itself when a write finds no
        bucket; a worker may call it after a reconnect too."""
        async with self._reopening:
            await self._close_watch()
            self._mirror.clear()
            self._stale.clear()
            await self._open()
            self._signal()

    async def _open(self) -> KeyValue:
        """Ensure the bucket, mirror the pool's keys, create the configured accounts that have no
        entry (live state is never overwritten)."""
        kv = self._kv = await ensure_kv(self._js, ACCOUNTS_BUCKET, "web accounts' leases and health")
        self._synced = asyncio.Event()
        self._watcher = await kv.watch(f"{self._prefix}>")
        self._watch_task = asyncio.create_task(self._follow(self._watcher), name=f"account pool {self.pool} watch")
        await asyncio.wait_for(self._synced.wait(), _SYNC_WAIT)
        for name in self._specs:
            if name in self._mirror:
                continue
            fresh = AccountState()
            try:
                revision = await kv.create(self._key(name), fresh.encode())
            except KeyWrongLastSequenceError:  # another replica created it first
                continue
            self._set(name, revision, fresh)
        return kv

    async def stop(self) -> None:
        """Stop the watch and the renewals of leases still held (they expire after lease_ttl)."""
        for lease in list(self._leases):
            await lease._stop_renewal()
        self._leases.clear()
        await self._close_watch()

    async def _close_watch(self) -> None:
        watcher, task, self._watcher, self._watch_task = self._watcher, self._watch_task, None, None
        await stop_watch(watcher, task)

    async def _follow(self, watcher: KeyValue.KeyWatcher) -> None:
        try:
            await self._mirror_updates(watcher)
        except Exception:  # without the watch, waits end by their timers and lost races stay skipped
            log.exception("the watch of account pool %s failed", self.pool)

    async def _mirror_updates(self, watcher: KeyValue.KeyWatcher) -> None:
        async for entry in watcher:
            if entry is None:  # the current values are all in
                self._synced.set()
                continue
            name = entry.key[len(self._prefix):]
            if entry.operation in (KV_DEL, KV_PURGE):
                self._mirror.pop(name, None)
                self._signal()
                continue
            self._set(name, entry.revision, AccountState.decode(entry.value or b""))

    def _set(self, name: str, revision: int, state: AccountState) -> None:
        """Mirror a value read or written, unless the mirror already holds a newer one."""
        current = self._mirror.get(name)
        if current is not None and current.revision >= revision:
            return
        self._mirror[name] = _Entry(revision, state)
        if state.lease_id and state.wanted_by_other(self.holder, time.time()):
            for lease in self._leases:
                if lease.name == name and lease.lease_id == state.lease_id:
                    lease.wanted.set()
        stale = self._stale.get(name)
        if stale is not None and stale[0] < revision:
            del self._stale[name]
        self._signal()

    def _signal(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _key(self, name: str) -> str:
        return self._prefix + name

    def _entry(self, name: str) -> _Entry:
        return self._mirror.get(name) or _Entry(0, AccountState())

    def _kv_or_raise(self) -> KeyValue:
        if self._kv is None:
            raise RuntimeError("AccountPool.start() was not called")
        return self._kv

    # ---- leasing

    # `timeout` is the interface's name: running out raises PoolBusy (with retry_after), which a
    # caller's asyncio.timeout could not say
    async def acquire(
        self, model: str | None, *, timeout: float | None,  # noqa: ASYNC109
        exclude: Collection[str] = (), job: str = "", stocking: bool = False,
    ) -> Lease:
        """An account free now for `model` (None: for at least one model), least recently used
        first; waits up to `timeout` (None: for ever) for one to free. PoolBusy after the timeout;
        NoEligibleAccount at once when no account outside `exclude` could ever serve `model`.
        `stocking`: a replica leasing an account for jobs it has not got yet; it never takes one
        a waiting job asked for (`wanted`), nor asks for one itself."""
        names = [n for n in self._specs if n not in exclude]
        return await self._acquire(names, model, timeout, job, NoEligibleAccount, stocking)

    async def acquire_named(
        self, name: str, model: str | None, *, timeout: float | None, job: str = "",  # noqa: ASYNC109
    ) -> Lease:
        """That account (a conversation continues on it); waits like acquire while it is busy or cooling.
        AccountGone if it is not configured, is quarantined, or does not serve `model`."""
        if name not in self._specs:
            raise AccountGone(f"account {name!r} is not configured in pool {self.pool}")
        return await self._acquire([name], model, timeout, job, AccountGone)

    async def _acquire(
        self, names: Sequence[str], model: str | None, wait: float | None, job: str, never: type[PoolError],
        stocking: bool = False,
    ) -> Lease:
        kv = self._kv_or_raise()
        loop = asyncio.get_running_loop()
        deadline = None if wait is None else loop.time() + wait
        while True:
            changed = self._changed  # taken before the CAS: a change meanwhile wakes the wait at once
            now = time.time()
            if any(since + _STALE_LIMIT <= now and revision >= self._entry(name).revision
                   for name, (revision, since) in self._stale.items()):
                log.warning("account pool %s: the watch brought no news of a lost race; reading the KV again",
                            self.pool)
                await self.resync()  # a bucket made anew (NATS restarted), or a dead watch
                kv = self._kv_or_raise()
                continue
            picks, wake_at, retry_after = self._pick(names, model, now, never, stocking)
            try:
                for name, revision in picks:
                    lease = await self._try_lease(kv, name, revision, job)
                    if lease is not None:
                        return lease
            except NoStreamResponseError:  # the bucket vanished: make it again and pick afresh
                await self.resync()
                kv = self._kv_or_raise()
                continue
            if picks:  # lost every race: pick again at once (the losers are skipped until news comes)
                continue
            if not stocking:  # a job waits (not a replica stocking up for its next ones)
                target = self._want_target(names, model, now)
                if target is not None:
                    await self._want(target, deadline, loop.time())
            delay = None if wake_at is None else max(0.0, wake_at - time.time()) + _WAKE_SLACK
            if deadline is not None:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise PoolBusy(None if retry_after is None else max(0.0, retry_after - time.time()))
                delay = remaining if delay is None else min(delay, remaining)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), delay)

    def _pick(
        self, names: Sequence[str], model: str | None, now: float, never: type[PoolError], stocking: bool = False,
    ) -> tuple[list[tuple[str, int]], float | None, float | None]:
        """(free accounts, least recently used first; when to look again; when the soonest
        cooldown ends, None if some candidate is merely leased)."""
        free: list[tuple[float, str, int]] = []
        wake: list[float] = []
        cooling_ends: list[float] = []
        just_leased = False
        possible = False
        for name in names:
            spec = self._specs[name]
            if model is not None and spec.models is not None and model not in spec.models:
                continue
            entry = self._entry(name)
            state = entry.state
            if state.quarantined:
                continue
            possible = True
            end = state.cooling_end(spec.models, model, now)
            if end:
                wake.append(end)
                cooling_ends.append(end)
            elif state.leased(now):
                wake.append(state.lease_until)
                just_leased = True
            elif (stale := self._stale.get(name)) is not None and stale[0] >= entry.revision:
                wake.append(stale[1] + _STALE_LIMIT)  # a lost race: the watch brings the winner's write
                just_leased = True
            elif name in self._claiming:  # another caller here has a CAS in flight: its outcome is a change
                just_leased = True
            elif state.wanted_until > now and state.wanted_by and (
                    (len(names) > 1 and state.wanted_by != self.holder) or stocking):
                # left to the job that asked for it (never to a replica stocking up for later jobs)
                wake.append(state.wanted_until)
                just_leased = True
            else:
                free.append((state.last_used, name, entry.revision))
        if not possible:
            raise never(f"no account of pool {self.pool} can serve model {model!r}" if model is not None
                        else f"no account of pool {self.pool} is in service")
        free.sort()
        retry_after = None if just_leased or not cooling_ends else min(cooling_ends)
        return [(name, revision) for _, name, revision in free], (min(wake) if wake else None), retry_after

    async def _try_lease(self, kv: KeyValue, name: str, revision: int, job: str) -> Lease | None:
        """Lease the account as it was picked (free at `revision`); None when that is no longer so."""
        entry = self._entry(name)
        if entry.revision != revision:  # it changed while an earlier candidate's CAS was in flight
            return None
        now = time.time()
        state = entry.state.clone()
        lease = Lease(self, name, ids.new_id())
        state.lease_id = lease.lease_id
        state.lease_holder = self.holder
        state.lease_until = now + self.policy.lease_ttl
        state.lease_job = job
        state.last_used = now
        if state.wanted_by == self.holder:
            state.wanted_by, state.wanted_until = "", 0.0
        self._claiming.add(name)
        try:
            written = await kv.update(self._key(name), state.encode(), last=revision)
        except KeyWrongLastSequenceError:  # another replica wrote first: not this one, for now
            if self._entry(name).revision <= revision:  # unless the watch brought the winner's write already
                self._stale[name] = (revision, time.time())
            return None
        except BaseException:
            self._signal()  # callers here that skipped it while claimed look again
            raise
        finally:
            self._claiming.discard(name)
        self._set(name, written, state)
        self._leases.add(lease)
        lease._start_renewal()
        return lease

    def _want_target(self, names: Sequence[str], model: str | None, now: float) -> str | None:
        """The account to ask another replica for: one that could serve `model` now and is merely
        leased by another replica (perhaps idle, held for its next job), least recently used first;
        one this replica already asked for, if any."""
        candidates: list[tuple[float, str]] = []
        for name in names:
            spec = self._specs[name]
            if model is not None and spec.models is not None and model not in spec.models:
                continue
            state = self._entry(name).state
            if state.quarantined or state.cooling_end(spec.models, model, now):
                continue
            if not state.leased(now) or state.lease_holder == self.holder or state.lease_job:
                continue  # a job's lease ends with its job: only one held for later jobs is worth asking for
            if state.wanted_by == self.holder and state.wanted_until > now:
                return name
            if not state.wanted_by_other(self.holder, now):
                candidates.append((state.last_used, name))
        return min(candidates)[1] if candidates else None

    async def _want(self, name: str, deadline: float | None, now_mono: float) -> None:
        """Ask the replica holding `name` to give it up once idle (one write, only when another
        replica holds it and our standing request would lapse before we stop waiting)."""
        state = self._entry(name).state
        now = time.time()
        if not state.leased(now) or state.lease_holder == self.holder:
            return
        until = now + (self.policy.lease_ttl if deadline is None else max(0.5, deadline - now_mono))
        if state.wanted_by == self.holder and state.wanted_until >= until - 0.5:
            return

        def want(current: AccountState, revision: int) -> AccountState | None:
            if not current.leased(time.time()) or current.wanted_by_other(self.holder, time.time()):
                return None  # freed meanwhile, or another waiter asked first: it goes first
            current.wanted_by, current.wanted_until = self.holder, until
            return current

        with contextlib.suppress(PoolError):
            await self._write(name, want)

    async def _renew(self, lease: Lease) -> bool:
        """Push the lease's expiry forward; False when it is no longer ours."""
        held = True

        def renew(state: AccountState, revision: int) -> AccountState | None:
            nonlocal held
            if state.lease_id != lease.lease_id:
                if revision:
                    held = False
                    return None
                # the key is gone with its bucket (a restarted NATS): the turn goes on, leased again
                state.lease_id, state.lease_holder, state.last_used = lease.lease_id, self.holder, time.time()
            state.lease_until = time.time() + self.policy.lease_ttl
            return state

        await self._write(lease.name, renew)
        return held

    async def _finish(self, lease: Lease, outcome: Outcome) -> None:
        spec = self._specs[lease.name]

        def finish(state: AccountState, revision: int) -> AccountState | None:
            ours = state.lease_id == lease.lease_id
            if ours:
                state.clear_lease()
            elif outcome.verdict is Verdict.NEUTRAL:
                return None  # expired and taken meanwhile: nothing of ours to write
            state.apply(outcome, self.policy, time.time(), spec.fingerprint, spec.daily_budget)
            return state

        await self._write(lease.name, finish)

    async def _write(self, name: str, change: Change) -> None:
        """Read-modify-write by compare-and-set: from the mirror first (one round trip when it is
        current), from the KV after a lost race. `change` gets a copy of the state and its revision
        (0: no such key) and returns None when there is nothing to write."""
        kv = self._kv_or_raise()
        entry = self._entry(name)
        for _ in range(_CAS_ATTEMPTS):
            changed = change(entry.state.clone(), entry.revision)
            if changed is None:
                return
            try:
                revision = await kv.update(self._key(name), changed.encode(), last=entry.revision)
            except KeyWrongLastSequenceError:
                entry = await self._read(kv, name)
                continue
            except NoStreamResponseError:  # the bucket vanished: make it again, then write on the fresh key
                await self.resync()
                kv = self._kv_or_raise()
                entry = self._entry(name)
                continue
            self._set(name, revision, changed)
            return
        raise PoolError(f"account {name}: {_CAS_ATTEMPTS} writes in a row lost to other writers")

    async def _read(self, kv: KeyValue, name: str) -> _Entry:
        try:
            got = await kv.get(self._key(name))
        except KeyNotFoundError:
            return _Entry(0, AccountState())
        state = AccountState.decode(got.value or b"")
        revision = got.revision or 0  # always set by a KV get
        self._set(name, revision, state.clone())
        return _Entry(revision, state)

    # ---- operator

    async def quarantine(self, name: str, reason: str) -> None:
        """Take the account out of service (a lease held now runs to its release)."""
        spec = self._spec_or_gone(name)

        def quarantine(state: AccountState, revision: int) -> AccountState:
            state.quarantined = True
            state.reason = reason[:200] or "quarantined by the operator"
            state.quarantined_fp = spec.fingerprint
            return state

        await self._write(name, quarantine)

    async def restore(self, name: str) -> None:
        """Back in service with a clean slate: no quarantine, cooldown, failure streak or backoff."""
        self._spec_or_gone(name)

        def restore(state: AccountState, revision: int) -> AccountState:
            state.lift_quarantine()
            return state

        await self._write(name, restore)

    def _spec_or_gone(self, name: str) -> AccountSpec:
        spec = self._specs.get(name)
        if spec is None:
            raise AccountGone(f"account {name!r} is not configured in pool {self.pool}")
        return spec

    # ---- views (from the mirror; no round trip)

    def eligible(self, name: str, model: str | None) -> bool:
        """May this account serve `model` now, its own lease aside."""
        spec = self._specs.get(name)
        if spec is None or (model is not None and spec.models is not None and model not in spec.models):
            return False
        state = self._entry(name).state
        return not state.quarantined and not state.cooling_end(spec.models, model, time.time())

    def accounts(self) -> list[AccountView]:
        now = time.time()
        return [self._view(name, spec, now) for name, spec in self._specs.items()]

    def _view(self, name: str, spec: AccountSpec, now: float) -> AccountView:
        return account_view(name, spec, self._entry(name).state, now)

    def soonest_free(self) -> float | None:
        """Unix time the soonest cooldown ends when no account is free; None when one is free,
        or none is cooling (all leased or quarantined: unknown)."""
        views = self.accounts()
        if any(v.state == "free" for v in views):
            return None
        ends = [v.until for v in views if v.state == "cooling" and v.until is not None]
        return min(ends) if ends else None

    def _state_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATES, 0)
        for view in self.accounts():
            counts[view.state] += 1
        return counts


def account_view(name: str, spec: AccountSpec, state: AccountState, now: float) -> AccountView:
    """How the operator sees an account's shared state (the pool's list, tools/accounts.py, the
    admin API): no secret in it."""
    models = {m: t for m, t in state.model_cool.items() if t > now}
    cooling = state.cooling_end(spec.models, None, now)
    used, budget = state.used_today(now), spec.daily_budget
    if state.quarantined:
        return AccountView(name, "quarantined", None, state.reason, models, state.level, used, budget)
    if state.leased(now):
        return AccountView(name, "leased", state.lease_until, "", models, state.level, used, budget,
                           state.lease_holder)
    if cooling:
        reason = state.cool_reason if state.cool_until > now else "every model rate limited"
        return AccountView(name, "cooling", cooling, reason, models, state.level, used, budget)
    return AccountView(name, "free", None, "", models, state.level, used, budget)


def _lift_if_fingerprint_changed(fingerprint: str) -> Change:
    def lift(state: AccountState, revision: int) -> AccountState | None:
        if not state.quarantined or state.quarantined_fp == fingerprint:
            return None  # another replica lifted it already, or it was quarantined under these credentials
        state.lift_quarantine()
        return state

    return lift


def announced_state(pool: AccountPool | None, configured: int) -> AccountsState:
    """What a web worker announces of its accounts (proto/messages.py AccountsState): before its
    pool is attached, the configured number and none free."""
    if pool is None:
        return {"total": configured, "free": 0, "retry_at": None}
    views = pool.accounts()
    return {"total": len(views), "free": sum(1 for v in views if v.state == "free"), "retry_at": pool.soonest_free()}
