"""A `chatgpt_web` job: one call of go-chatgpt-api's routes (seed 003), relayed to the backend-api.

The account it runs on: the caller's own access token when the job carries one (it bypasses the
pool and is held for scrubbing, never stored); else the account the named conversation belongs to
(the owner map of continuity.py); else one of the pool's. A conversation turn (`POST
/conversation`) holds that account's lease for the turn, as every turn does; the other calls
(list, get, rename, hide, title, feedback) only read the account's token.

Answers keep the upstream's own shapes: a turn's events relayed event for event (`Event`), every
other call's (and a turn's failure before its first event) status and body as one `Result`
(proto/schemas/v1/chatgpt_web_result.json).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import httpx

from libs import secrets
from libs.account_pool.outcome import Outcome
from libs.account_pool.pool import Lease
from libs.errors import InvalidRequest, UpstreamError
from libs.openai_upstream.call import proxy_for_url
from libs.worker_backend import Event, Item, Result, StreamEnd, WholeAnswer
from proto.messages import Job
from services.chatgpt_web_worker.parts import WebParts
from services.chatgpt_web_worker.stream import ConversationStream, Native
from services.chatgpt_web_worker.upstream_errors import UpstreamFailure

_CONVERSATION = re.compile(r"/conversation/(?:gen_title/)?([A-Za-z0-9-]{1,64})")
_LOGIN_TIMEOUT = 30.0


def _conversation_of(path: str, payload: Any) -> str | None:
    match = _CONVERSATION.fullmatch(path)
    if match is not None:
        return match.group(1)
    if isinstance(payload, dict) and isinstance(payload.get("conversation_id"), str) and payload["conversation_id"]:
        return str(payload["conversation_id"])
    return None


class NativeCalls:
    def __init__(self, parts: WebParts) -> None:
        self.config = parts.config
        self.pool = parts.pool
        self.leasing = parts.leasing
        self.continuity = parts.continuity
        self.turns = parts.turns

    async def run(self, job: Job, body: dict[str, Any]) -> AsyncIterator[Item]:
        method, path = str(body.get("method", "")), str(body.get("path", ""))
        query = body.get("query") or None
        payload = body.get("json")
        token = job.get("access_token")
        if token is not None:
            secrets.hold(token)  # the caller's: scrubbed from anything the upstream says
        if path == "/auth/login" and method == "POST":
            yield WholeAnswer()
            yield Result(await self._login(payload))
        elif path == "/conversation" and method == "POST":
            async for item in self._turn(job, payload, token):
                yield item
            return
        else:
            yield WholeAnswer()
            account = None if token is not None else await self._account_for(_conversation_of(path, payload))
            status, answer = await self.turns.call(account, method, path, query=query, json=payload, token=token)
            yield Result({"status": status, "body": answer})
        yield StreamEnd()

    async def _account_for(self, conversation_id: str | None) -> str:
        """The conversation's account, else the pool's first usable one (no lease: not a turn)."""
        if conversation_id is not None:
            owner = await self.continuity.owner(conversation_id)
            if owner is not None:
                return owner
        usable = [a.name for a in self.pool.accounts() if a.state != "quarantined"]
        if not usable:
            raise UpstreamError("every ChatGPT account of this pool is quarantined")
        return usable[0]

    async def _turn(self, job: Job, payload: Any, token: str | None) -> AsyncIterator[Item]:
        if not isinstance(payload, dict):
            raise InvalidRequest("the conversation request must be a JSON object")
        model = payload.get("model") if isinstance(payload.get("model"), str) else None
        conversation_id = payload.get("conversation_id") or None
        lease: Lease | None = None
        account: str | None = None
        if token is None:
            lease = await self._lease(job, model, conversation_id)
            account = lease.name
        outcome = Outcome.neutral()
        parser = ConversationStream()
        learned: str | None = None
        try:
            try:
                async for chunk in self.turns.open(account, payload, token=token):
                    for event in parser.feed(chunk):
                        if isinstance(event, Native):
                            learned = learned or _conversation_id(event.data)
                            yield Event(event.data)
                for event in parser.close():
                    if isinstance(event, Native):
                        yield Event(event.data)
                outcome = Outcome.ok()
            except UpstreamFailure as failure:
                outcome = failure.outcome
                if learned is not None:  # events went out: the edge ends the stream with the error
                    raise failure.error from None
                yield Result({"status": failure.status, "body": failure.body})
        finally:
            if lease is not None:
                await self.leasing.give_back(lease, outcome)
        if account is not None and learned and not conversation_id:
            await self.continuity.claim(learned, account)  # later calls about it go to this account
        yield StreamEnd(account=account)

    async def _lease(self, job: Job, model: str | None, conversation_id: Any) -> Lease:
        """The conversation's account when it names one of ours, else any free one."""
        owner = await self.continuity.owner(conversation_id) if isinstance(conversation_id, str) else None
        if owner is None:
            return await self.leasing.any(job, model)
        lease = await self.leasing.named(job, owner, model)
        if lease is None:
            raise UpstreamError("the account holding this conversation is quarantined; start a new conversation")
        return lease

    async def _login(self, payload: Any) -> dict[str, Any]:
        if self.config.auth_url is None:
            return {"status": 501, "body": {"error": {
                "message": "login is not configured on this gateway: set CHATGPT_AUTH_URL on chatgpt-web-worker "
                           "to a service that exchanges {username, password} for {accessToken}",
                "type": "invalid_request_error", "param": None, "code": "login_not_configured"}}}
        if not isinstance(payload, dict):
            raise InvalidRequest("the login request must be a JSON object")
        password = payload.get("password")
        if isinstance(password, str):
            secrets.hold(password)
        try:
            proxy = proxy_for_url(self.config.auth_url, self.config.default_proxy)
            async with httpx.AsyncClient(timeout=_LOGIN_TIMEOUT, trust_env=False, proxy=proxy) as http:
                response = await http.post(self.config.auth_url, json=payload)
        except httpx.HTTPError as exc:
            raise UpstreamError(f"the login service could not be reached ({type(exc).__name__})") from None
        try:
            answer: Any = response.json()
        except ValueError:
            answer = {"detail": secrets.scrub(response.text[:500])}
        if isinstance(answer, dict) and isinstance(answer.get("accessToken"), str):
            secrets.hold(answer["accessToken"])  # the caller's from now on: never in our logs
        return {"status": response.status_code, "body": answer}


def _conversation_id(data: dict[str, Any]) -> str | None:
    value = data.get("conversation_id")
    return value if isinstance(value, str) and value else None
