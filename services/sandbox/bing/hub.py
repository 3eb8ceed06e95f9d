"""GET /sydney/ChatHub: the websocket, spoken by hand over the ASGI websocket protocol (sheet §2, §3).

The upgrade needs `sec_access_token` = the encrypted signature of a conversation this fake created;
otherwise it is refused with an HTTP 401 before any websocket exists (the ASGI `websocket.http.response`
extension; a server without it refuses with 403)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import orjson

from ..asgi import Receive, Scope, Send
from . import answer, cookies, invocation, messages, signalr
from .conversations import Conversation, ttl_text
from .directives import DirectiveError
from .directives import parse as parse_directives
from .http import query, request_cookies
from .observe import Record, headers_seen
from .state import BingState

PING_INTERVAL = 10.0  # seconds between the hub's own {"type":6} frames while nothing else is sent
_REFUSED = orjson.dumps({"result": {"value": "UnauthorizedRequest",
                                    "message": "sec_access_token is missing or unknown (sandbox)"}})


class _Socket:
    """Sends serialised (one frame never interleaves another) and the reader's inbox."""

    def __init__(self, send: Send, receive: Receive) -> None:
        self._send = send
        self._receive = receive
        self._lock = asyncio.Lock()
        self.inbox: asyncio.Queue[str | bytes | None] = asyncio.Queue()
        self.quiet = False  # during a silence_ms pause: not even pings
        self.sent_at = 0.0

    async def read(self) -> None:
        while True:
            message = await self._receive()
            if message["type"] == "websocket.receive":
                text = message.get("text")
                self.inbox.put_nowait(text if text is not None else bytes(message.get("bytes") or b""))
            elif message["type"] == "websocket.disconnect":
                self.inbox.put_nowait(None)
                return

    async def text(self, data: str) -> None:
        async with self._lock:
            await self._send({"type": "websocket.send", "text": data})
            self.sent_at = asyncio.get_running_loop().time()

    async def close(self, code: int = 1000) -> None:
        async with self._lock:
            await self._send({"type": "websocket.close", "code": code})

    async def keepalive(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(PING_INTERVAL)
            if not self.quiet and loop.time() - self.sent_at >= PING_INTERVAL / 2:
                await self.text(signalr.PING)


async def serve(state: BingState, scope: Scope, receive: Receive, send: Send) -> None:
    if (await receive())["type"] != "websocket.connect":
        return
    jar = request_cookies(scope)
    account, _ = cookies.account_of(jar)
    token = query(scope).get("sec_access_token")
    conv = state.conversations.by_secret(token) if token else None
    record = state.observer.record(
        "chathub", scope["path"], account, list(jar), headers=headers_seen(scope),
        token="ok" if conv else ("missing" if not token else "unknown"),
        conversationId=conv.id if conv else None, conversationAccount=conv.account if conv else None,
    )
    if conv is None:
        record["status"] = 401
        if "websocket.http.response" in scope.get("extensions", {}):
            headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(_REFUSED))]
            await send({"type": "websocket.http.response.start", "status": 401, "headers": headers})
            await send({"type": "websocket.http.response.body", "body": _REFUSED})
        else:
            await send({"type": "websocket.close", "code": 1008})
        return
    record["status"] = 101
    await send({"type": "websocket.accept"})
    socket = _Socket(send, receive)
    state.observer.socket_opened()
    tasks = [asyncio.create_task(socket.read()), asyncio.create_task(socket.keepalive())]
    try:
        await _Hub(state, conv, socket, record).run()
    except OSError:
        pass  # uvicorn's ClientDisconnected: the client left while we were sending
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await task
        state.observer.socket_closed()


class _Hub:
    def __init__(self, state: BingState, conv: Conversation, socket: _Socket, record: Record) -> None:
        self.state, self.conv, self.socket, self.record = state, conv, socket, record
        self.record["ended"] = None

    async def run(self) -> None:
        handshaken = False
        while True:
            data = await self.socket.inbox.get()
            if data is None:
                self.record["ended"] = "client closed"
                return
            if isinstance(data, bytes):
                await self._fail("a binary frame (the JSON hub protocol is text)")
                return
            try:
                records = signalr.split(data)
            except signalr.FrameError as exc:
                await self._fail(str(exc))
                return
            for rec in records:
                if not handshaken:
                    if not signalr.is_handshake(rec):
                        await self.socket.text(signalr.encode(
                            {"error": 'the first record must be the handshake {"protocol":"json","version":1}'}))
                        await self.socket.close()
                        self.record["ended"] = "bad handshake"
                        return
                    handshaken = True
                    await self.socket.text(signalr.HANDSHAKE_OK)
                    continue
                kind = rec.get("type")
                if kind == 6:
                    continue
                if kind == 7:
                    await self.socket.close()
                    self.record["ended"] = "client sent type 7"
                    return
                if kind == 4 and rec.get("target") == "chat":
                    if await self._chat(rec):
                        return
                elif kind == 4:
                    await self.socket.text(signalr.encode({"type": 3, "invocationId": invocation.invocation_id_of(rec),
                                                           "error": f"Unknown hub method '{rec.get('target')}'"}))
                else:
                    self.record.setdefault("ignored", []).append(kind)

    async def _fail(self, why: str) -> None:
        await self.socket.text(signalr.close(f"Connection closed with an error. (sandbox: {why})", False))
        await self.socket.close()
        self.record["ended"] = why

    async def _error(self, rec: dict[str, Any], log: Record, value: str, message: str) -> None:
        args = rec.get("arguments")
        arg = args[0] if isinstance(args, list) and args and isinstance(args[0], dict) else {}
        given = arg.get("conversationId")
        cid = given if isinstance(given, str) else self.conv.id
        iid = invocation.invocation_id_of(rec)
        log["result"] = value
        request_id = str(arg.get("requestId") or iid)
        await self.socket.text(signalr.encode(messages.error(iid, cid, request_id, value, message),
                                              messages.completion(iid)))

    async def _chat(self, rec: dict[str, Any]) -> bool:
        """Answers one invocation; True when the socket is over."""
        state, conv = self.state, self.conv
        log = state.observer.record("chat", self.record["path"], conv.account, [], conversation=conv.id)
        state.observer.chatted(conv.account)
        try:
            inv = invocation.parse(rec)
            log.update(inv.summary())
            found = parse_directives(inv.text)
        except (invocation.InvocationError, DirectiveError) as exc:
            await self._error(rec, log, "InvalidRequest", f"{exc} (sandbox)")
            return False
        ttl = ttl_text(conv.ttl)
        if inv.conversation_id != conv.id or conv.expired():
            await self._error(rec, log, "InvalidSession", answer.error_message("InvalidSession", conv,
                                                                               inv.conversation_id, ttl))
            return False
        if inv.participant_id != conv.client_id:
            await self._error(rec, log, "InvalidRequest",
                              f"participant.id '{inv.participant_id}' is not the clientId of conversation "
                              f"'{conv.id}' (sandbox)")
            return False
        fault = state.faults.take(conv.account, create=False)
        blob = state.blobs.of_url(inv.image_url)
        image = None if not inv.image_url else ("known" if blob is not None else "unknown")
        steps, outcome = answer.build(conv, inv, found, image, fault.kind if fault else None, ttl)
        log.update(fault=fault.kind if fault else None, image=image, result=outcome)
        latency = found.ints.get("latency_ms", 0) / 1000
        for i, step in enumerate(steps):
            if step.pause_ms:
                self.socket.quiet = True
                await asyncio.sleep(step.pause_ms / 1000)
                self.socket.quiet = False
                continue
            if i and latency:
                await asyncio.sleep(latency)
            if step.frame:
                await self.socket.text(step.frame)
            if step.end == "close7":
                await self.socket.close()
                self.record["ended"] = "close7"
                return True
            if step.end == "drop":
                self.record["ended"] = "drop"
                return True  # the app returns without a close frame: uvicorn drops the connection
        return False
