"""chatgpt-web-worker's backend: OpenAI chat and go-chatgpt-api's calls on a pool of ChatGPT web accounts.

The pool (libs/account_pool/) is shared by every replica through JetStream KV: `attach` binds it,
the conversation map and the reservations (this replica's admission) once the runtime has
JetStream. A chat job goes to chat.py, a `chatgpt_web` job to native.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from nats.js import JetStreamContext

from libs.account_pool.conversations import ConversationMap
from libs.account_pool.leasing import Leasing
from libs.account_pool.pool import AccountPool, AccountSpec, PoolMetrics, PoolPolicy, announced_state
from libs.account_pool.reservations import Reservations
from libs.errors import InvalidRequest
from libs.openai_upstream.call import proxy_for_url
from libs.settings import env_float
from libs.tokens import encoding_name, preload
from libs.worker_backend import Item
from libs.worker_metrics import WorkerMetrics
from proto.messages import AccountsState, Feature, Job, Kind
from services.chatgpt_web_worker.chat import ChatTurns
from services.chatgpt_web_worker.client import WebClient
from services.chatgpt_web_worker.config import WebConfig, with_live_models
from services.chatgpt_web_worker.continuity import Continuity
from services.chatgpt_web_worker.credentials import Credentials
from services.chatgpt_web_worker.native import NativeCalls
from services.chatgpt_web_worker.parts import WebParts
from services.chatgpt_web_worker.turn import Turns

log = logging.getLogger("switchyard.chatgpt_web")

CONVERSATION_TTL = 7 * 24 * 3600.0  # how long a web conversation can be continued from its transcript


def _serves(config: WebConfig) -> dict[str, list[Kind]]:
    """Slugs answer chat and go-chatgpt-api's calls; OpenAI names mapped onto them, chat."""
    serves: dict[str, list[Kind]] = {slug: ["chat", "chatgpt_web"] for slug in config.models}
    serves.update({alias: ["chat"] for alias in config.aliases})
    return serves


class ChatGPTWebBackend:
    def __init__(self, config: WebConfig, metrics: WorkerMetrics, *, pool: str, worker_id: str, capacity: int,
                 policy: PoolPolicy | None = None) -> None:
        self.config = config
        self.features: list[Feature] = ["chat"]  # n > 1: the edge fans out, one account per choice
        self._serves = _serves(config)
        self._pool_name = pool
        self._worker_id = worker_id
        self._registry = metrics.registry
        self._policy = policy or PoolPolicy().scaled(env_float("SY_TIME_SCALE", 1.0))
        self._capacity = capacity
        # reads are bounded by the runtime's first-token and idle limits (it cancels the job)
        self.client = WebClient(config.base_url, connect_timeout=10.0, read_timeout=600.0)
        proxies = {a.name: proxy_for_url(config.base_url, a.proxy or config.default_proxy) for a in config.accounts}
        self.turns = Turns(self.client, Credentials(self.client, config.accounts, proxies), proxies,
                           proxy_for_url(config.base_url, config.default_proxy))
        self.pool: AccountPool | None = None
        self.admission: Reservations | None = None  # the runtime's admission, made by attach
        self._chat: ChatTurns | None = None
        self._native: NativeCalls | None = None

    @property
    def serves(self) -> Mapping[str, Sequence[Kind]]:
        return self._serves

    async def _ask_accounts_for_models(self) -> None:
        """CHATGPT_MODELS_FROM_ACCOUNTS: each account's own list (`GET /backend-api/models`, its
        plan) decides what it may run and what this worker serves. An account that cannot answer
        keeps its configured models (the pool will judge it on its first turn)."""
        live: dict[str, frozenset[str]] = {}
        for account in self.config.accounts:
            try:
                status, body = await self.turns.call(account.name, "GET", "/models", query=None, json=None)
            except Exception as exc:  # a refused session, an unreachable upstream: not fatal here
                log.warning("account %s: could not read its models (%s)", account.name, type(exc).__name__)
                continue
            models = body.get("models") if status == 200 and isinstance(body, dict) else None
            if not isinstance(models, list):
                log.warning("account %s: its models list answered %s", account.name, status)
                continue
            live[account.name] = frozenset(str(m["slug"]) for m in models if isinstance(m, dict) and m.get("slug"))
        self.config = with_live_models(self.config, live)
        self._serves = _serves(self.config)
        log.info("serving %s, as the accounts' own lists say", ", ".join(self.config.models))

    async def attach(self, js: JetStreamContext) -> None:
        if self.config.models_from_accounts:
            await self._ask_accounts_for_models()
        specs = [AccountSpec(a.name, a.models, a.fingerprint) for a in self.config.accounts]
        self.pool = AccountPool(js, self._pool_name, specs, holder=self._worker_id, policy=self._policy,
                                metrics=PoolMetrics(self._registry, self._pool_name))
        await self.pool.start()
        # the tokenizers load once per process (about a second): before the first job, not in it
        for encoding_model in {encoding_name(slug): slug for slug in self.config.models}.values():
            await asyncio.to_thread(preload, encoding_model)
        conversations = ConversationMap(js, ttl=CONVERSATION_TTL)
        continuity = Continuity(conversations, self._pool_name)
        reservations = Reservations(self.pool, self._capacity)
        reservations.start()
        self.admission = reservations
        parts = WebParts(self.config, self.pool, Leasing(self.pool, reservations), continuity, self.turns)
        self._chat = ChatTurns(parts)
        self._native = NativeCalls(parts)

    async def reconnected(self) -> None:
        """A restarted NATS (or a long outage) may have ended the pool's watch: read the KV afresh."""
        if self.pool is not None:
            await self.pool.resync()

    def accounts_state(self) -> AccountsState:
        return announced_state(self.pool, len(self.config.accounts))

    async def stream(self, job: Job, body: dict[str, Any]) -> AsyncIterator[Item]:
        assert self._chat is not None and self._native is not None, "attach() runs before the first job"
        if job["kind"] == "chat":
            async for item in self._chat.run(job, body):
                yield item
        elif job["kind"] == "chatgpt_web":
            async for item in self._native.run(job, body):
                yield item
        else:
            raise InvalidRequest(f"chatgpt-web-worker does not run {job['kind']} jobs")

    async def aclose(self) -> None:
        if self.admission is not None:
            await self.admission.stop()
        if self.pool is not None:
            await self.pool.stop()
        await self.client.aclose()

