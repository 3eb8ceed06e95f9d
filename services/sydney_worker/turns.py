"""One Bing turn for a job, for OpenAI chat (chat.py) and SydneyQt's native calls (native.py) alike.

Whose cookies: the caller's own when the job carries them (no lease, the pool learns nothing,
never stored or logged); else a pool account, leased for the whole turn (the one the continued
conversation lives on, else any free one). A conversation sealed to a pool account continues on
that account even when the caller brings cookies: it lives there. Before the turn's first output a failure that another
account may not share (BingFailure whose error is retryable) moves the turn to another account,
transparently, at most MAX_ACCOUNTS accounts; after it, or on a continued conversation (it lives
on one account) or on the caller's cookies, the failure stands. The lease goes back with the
failure's outcome (or OK), counting the conversation against the account's daily budget when the
turn created one.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from libs import secrets
from libs.account_pool.leasing import Leasing
from libs.account_pool.outcome import Outcome
from libs.bing.failures import BingFailure
from libs.bing.invocation import ChatRequest
from libs.bing.session import BingCalls, Opened, Who
from libs.bing.turn import SydneyEvent, TurnItem
from libs.errors import InvalidRequest, SwitchyardError, UpstreamError
from proto.messages import Job
from services.sydney_worker.sealing import Resume, Sealer, invalid

log = logging.getLogger("switchyard.sydney")

MAX_ACCOUNTS = 3  # accounts one turn tries before its failure stands
NO_ACCOUNTS = ("this sydney-worker has no Bing account (set DEFAULT_COOKIES or SYDNEY_ACCOUNTS_FILE): "
               "send your own Bing cookies with the request (the Cookie header)")


def caller_who(calls: BingCalls, job: Job) -> Who | None:
    """The caller's own cookies when the job brings them."""
    cookies = job.get("cookies")
    if not cookies:
        return None
    return calls.caller(cookies)


def _final(error: SwitchyardError, who: Who) -> SwitchyardError:
    """The caller's cookies are the only ones this turn may use: retrying elsewhere cannot help.
    They are scrubbed from the error here, for this call only: held process-wide, every caller's
    (rotating) cookies would grow the scrub list without bound."""
    error.retryable = False  # type: ignore[misc]  # per-instance refinement of the class default
    error.message = secrets.scrub_also(error.message, who.cookies.values())
    return error


class Turn:
    """One job's turn: iterate its items (Opened, SydneyEvents, TurnEnd). `account` names the pool
    account answering (None on the caller's cookies); `handed` is the conversation to give back
    (tokens sealed), set at each Opened. `output(event)` says whether an event is the job's first
    output (after it, no retry)."""

    def __init__(self, runner: TurnRunner, job: Job, request: ChatRequest, resume: Resume | None,
                 output: Callable[[SydneyEvent], bool], caller: Who | None) -> None:
        self._runner = runner
        self._job = job
        self._request = request
        self._resume = resume
        self._output = output
        self._caller = caller
        self.account: str | None = None
        self.handed: dict[str, Any] | None = None

    def __aiter__(self) -> AsyncIterator[Opened | TurnItem]:
        if self._caller is not None and (self._resume is None or self._resume.account is None):
            return self._on_caller(self._caller)
        return self._on_pool()

    async def _on_caller(self, who: Who) -> AsyncIterator[Opened | TurnItem]:
        conversation = self._resume.conversation if self._resume is not None else None
        try:
            async for item in self._runner.calls.turn(who, self._request, conversation):
                if isinstance(item, Opened):
                    self.handed = (self._resume.handed if self._resume is not None
                                   else self._runner.sealer.seal(item.conversation, None, who.cookies))
                yield item
        except BingFailure as failure:
            raise _final(failure.error, who) from None

    async def _on_pool(self) -> AsyncIterator[Opened | TurnItem]:
        leasing = self._runner.leasing
        if leasing is None:
            raise InvalidRequest(NO_ACCOUNTS, param="cookies")
        resume = self._resume
        tried: set[str] = set()
        for attempt in range(MAX_ACCOUNTS):
            if resume is not None:
                assert resume.account is not None
                lease = await leasing.named(self._job, resume.account, None)
                if lease is None:
                    raise invalid(f"the account this conversation lives on ({resume.account}) is quarantined "
                                  "or gone: start a new conversation")
            else:
                lease = await leasing.any(self._job, None, tried)
            tried.add(lease.name)
            self.account = lease.name
            outcome = Outcome.neutral()  # the client left, or the job was cancelled: says nothing
            created = started = False
            try:
                who = self._runner.calls.account(lease.name)
                async for item in self._runner.calls.turn(who, self._request,
                                                          resume.conversation if resume is not None else None):
                    if isinstance(item, Opened):
                        created = item.created
                        self.handed = (resume.handed if resume is not None
                                       else self._runner.sealer.seal(item.conversation, lease.name, None))
                    elif isinstance(item, SydneyEvent) and not started:
                        started = self._output(item)
                    yield item
                outcome = Outcome.ok()
            except BingFailure as failure:
                outcome = failure.outcome
                if started or resume is not None or not failure.error.retryable or attempt == MAX_ACCOUNTS - 1:
                    raise failure.error from None
                log.warning("account %s: %s before the first output; the turn moves to another account",
                            lease.name, failure.value)
                continue
            finally:
                if created:  # a conversation begun on the account counts against its daily budget
                    outcome = dataclasses.replace(outcome, conversations=1)
                await leasing.give_back(lease, outcome)
            return
        raise UpstreamError("no Bing account could answer this request")  # unreachable: the last try raises


class TurnRunner:
    def __init__(self, calls: BingCalls, leasing: Leasing | None, sealer: Sealer) -> None:
        self.calls = calls
        self.leasing = leasing  # None: no account configured, only callers' own cookies run
        self.sealer = sealer

    def caller(self, job: Job) -> Who | None:
        """The caller's own cookies, when the job brings them (read once per job)."""
        return caller_who(self.calls, job)

    def resume(self, value: Any, caller: Who | None) -> Resume | None:
        """The conversation a job asks to continue (sealing.py), None for a new one."""
        return self.sealer.open(value, caller.cookies if caller is not None else None)

    def turn(self, job: Job, request: ChatRequest, resume: Resume | None,
             output: Callable[[SydneyEvent], bool], caller: Who | None) -> Turn:
        return Turn(self, job, request, resume, output, caller)
