"""sydney-worker's backend: OpenAI chat and SydneyQt's calls on a pool of Bing cookie accounts.

The accounts (libs/bing/config.py) are a pool (libs/account_pool/, pool name libs.bing.config.POOL)
shared through JetStream KV by every replica and by image-worker's Bing backend: one turn per
account at a time, cooldowns, quarantines and the daily conversation budget are the pool's. With
no account configured there is no pool and no admission: only jobs bringing the caller's own
cookies run (the `cookies` feature tells the edge to pass them on). With accounts, the pool's
reservations are the admission for every job, so a job on the caller's cookies is pulled when an
account is idle here too (it leaves that account idle for the next job).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from nats.js import JetStreamContext

from libs.account_pool.leasing import Leasing
from libs.account_pool.pool import AccountPool, AccountSpec, PoolMetrics, PoolPolicy, announced_state
from libs.account_pool.reservations import Reservations
from libs.bing.config import POOL
from libs.bing.session import BingCalls
from libs.errors import InvalidRequest
from libs.settings import env_float
from libs.tokens import preload
from libs.worker_backend import Item
from libs.worker_metrics import WorkerMetrics
from proto.messages import AccountsState, Feature, Job, Kind
from services.sydney_worker.chat import USAGE_MODEL, ChatTurns
from services.sydney_worker.config import MODELS, SydneyConfig
from services.sydney_worker.native import NativeCalls
from services.sydney_worker.sealing import Sealer
from services.sydney_worker.turns import TurnRunner


def serves(config: SydneyConfig) -> dict[str, list[Kind]]:
    """The styles answer chat and SydneyQt's calls; the aliases, chat."""
    table: dict[str, list[Kind]] = {name: ["chat", "sydney"] for name in MODELS}
    table.update({alias: ["chat"] for alias in config.aliases})
    return table


class SydneyBackend:
    def __init__(self, config: SydneyConfig, metrics: WorkerMetrics, *, worker_id: str, capacity: int,
                 policy: PoolPolicy | None = None, calls: BingCalls | None = None) -> None:
        self.config = config
        # n > 1: the edge fans out, one account per choice; cookies: the caller's own run here
        self.features: list[Feature] = ["chat", "cookies"]
        self._serves = serves(config)
        self._worker_id = worker_id
        self._registry = metrics.registry
        self._policy = policy or PoolPolicy().scaled(env_float("SY_TIME_SCALE", 1.0))
        self._capacity = capacity
        self.calls = calls or BingCalls(config.bing)
        self._sealer = Sealer(config.bing.accounts)
        self.pool: AccountPool | None = None
        self.admission: Reservations | None = None  # the runtime's admission, made by attach
        self._chat: ChatTurns | None = None
        self._native: NativeCalls | None = None

    @property
    def serves(self) -> Mapping[str, Sequence[Kind]]:
        return self._serves

    async def attach(self, js: JetStreamContext) -> None:
        leasing: Leasing | None = None
        accounts = self.config.bing.accounts
        if accounts:
            specs = [AccountSpec(a.name, None, a.fingerprint, a.daily_budget) for a in accounts]
            self.pool = AccountPool(js, POOL, specs, holder=self._worker_id, policy=self._policy,
                                    metrics=PoolMetrics(self._registry, POOL))
            await self.pool.start()
            reservations = Reservations(self.pool, self._capacity)
            reservations.start()
            self.admission = reservations
            leasing = Leasing(self.pool, reservations)
        await asyncio.to_thread(preload, USAGE_MODEL)  # the tokenizer loads before the first job, not in it
        runner = TurnRunner(self.calls, leasing, self._sealer)
        self._chat = ChatTurns(self.config, runner)
        self._native = NativeCalls(runner)

    async def reconnected(self) -> None:
        """A restarted NATS (or a long outage) may have ended the pool's watch: read the KV afresh."""
        if self.pool is not None:
            await self.pool.resync()

    def accounts_state(self) -> AccountsState:
        return announced_state(self.pool, len(self.config.bing.accounts))

    async def stream(self, job: Job, body: dict[str, Any]) -> AsyncIterator[Item]:
        assert self._chat is not None and self._native is not None, "attach() runs before the first job"
        if job["kind"] == "chat":
            async for item in self._chat.run(job, body):
                yield item
        elif job["kind"] == "sydney":
            async for item in self._native.run(job, body):
                yield item
        else:
            raise InvalidRequest(f"sydney-worker does not run {job['kind']} jobs")

    async def aclose(self) -> None:
        if self.admission is not None:
            await self.admission.stop()
        if self.pool is not None:
            await self.pool.stop()
        await self.calls.aclose()
