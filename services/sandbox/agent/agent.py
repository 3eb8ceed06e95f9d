"""One fake agent: its websocket, registration, pings and jobs (see the package docstring)."""

from __future__ import annotations

import asyncio
import sys

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from . import wire
from .conversations import Conversations, UnknownConversation
from .directives import DirectiveError, parse

MAX_FRAME_BYTES = 4 << 20


def say(line: str) -> None:
    print(line, flush=True)


class Agent:
    def __init__(self, server: str, name: str) -> None:
        self.server = server
        self.name = name
        self.connection_id: str | None = None  # stored like the Firefox agent's cookie: survives reconnects
        self.conversations = Conversations()
        self._jobs: set[asyncio.Task[None]] = set()

    async def run(self, reconnect_ms: int | None) -> bool:
        """Serve connections until one ends (or forever with `reconnect_ms`). False: the first connect failed."""
        connected_once = False
        while True:
            served = False
            try:
                async with connect(self.server, max_size=MAX_FRAME_BYTES, open_timeout=5,
                                   ping_interval=None) as ws:  # the protocol has no websocket pings (§3.1)
                    connected_once = served = True
                    await self._serve(ws)
            except (OSError, TimeoutError) as exc:
                print(f"agent {self.name}: cannot connect: {type(exc).__name__}", file=sys.stderr, flush=True)
            except ConnectionClosed:
                pass
            finally:
                for task in self._jobs:
                    task.cancel()
            if served:
                say(f"agent {self.name} closed")
            if reconnect_ms is None:
                return connected_once
            await asyncio.sleep(reconnect_ms / 1000)

    async def _serve(self, ws: ClientConnection) -> None:
        async for text in ws:
            try:
                msg = wire.read(text)
            except wire.FrameError as exc:
                print(f"agent {self.name}: ignored frame: {exc}", file=sys.stderr, flush=True)
                continue
            kind = msg["message"]
            if kind == "Connection id":
                if self.connection_id is None:
                    self.connection_id = msg["id"]
                await ws.send(wire.frame(self.connection_id, "Connection id", ""))
                say(f"agent {self.name} registered as {self.connection_id}")
            elif kind == "ping":
                await ws.send(wire.frame(msg["id"], "pong", ""))
            elif kind == "ChatGptRequest":
                task = asyncio.create_task(self._job(ws, msg["id"], msg["data"]))
                self._jobs.add(task)
                task.add_done_callback(self._jobs.discard)
            else:
                print(f"agent {self.name}: unknown message kind ignored", file=sys.stderr, flush=True)

    async def _job(self, ws: ClientConnection, request_id: str, data: str) -> None:
        try:
            job = wire.read_job(data)
        except wire.FrameError as exc:
            print(f"agent {self.name}: job without an answer: {exc}", file=sys.stderr, flush=True)
            return
        try:
            directives = parse(job["content"])
        except DirectiveError as exc:
            await ws.send(wire.error_frame(request_id, str(exc)))
            return
        if directives.delay_ms:
            await asyncio.sleep(directives.delay_ms / 1000)
        if directives.silent:
            return
        if directives.die:
            await ws.close(code=1001, reason="going away")
            return
        if directives.error is not None:
            await ws.send(wire.error_frame(request_id, directives.error))
            return
        try:
            turn = self.conversations.turn(job["conversation_id"], job["parent_id"], job["message_id"])
        except UnknownConversation:
            await ws.send(wire.error_frame(request_id, "Unknown error"))
            return
        content = f"{self.name} #{turn.number}: {job['content']}"
        await ws.send(wire.answer_frame(request_id, turn.response_id, turn.conversation_id, content))
