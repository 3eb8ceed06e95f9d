"""The fake browser agent (services/sandbox/agent) against a tiny server speaking the SERVER side of
agent-protocol.md §3 by hand (deliberately not via libs/agents: each checks the other's reading)."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from websockets.asyncio.server import ServerConnection, serve

from libs.devproc import REPO_ROOT, base_env, free_port

STEP = 10.0  # bound of every wait; the agent answers in milliseconds


class Server:
    """Accepts agents on /client/register and hands each connection to the test."""

    def __init__(self) -> None:
        self.connections: asyncio.Queue[ServerConnection] = asyncio.Queue()
        self.url = ""

    async def _handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None and ws.request.path == "/client/register"
        await self.connections.put(ws)
        await ws.wait_closed()  # the test drives the socket; returning would close it

    async def accept(self) -> ServerConnection:
        return await asyncio.wait_for(self.connections.get(), STEP)


@contextlib.asynccontextmanager
async def agent_server() -> AsyncIterator[Server]:
    server = Server()
    async with serve(server._handler, "127.0.0.1", 0) as ws_server:
        port = next(iter(ws_server.sockets)).getsockname()[1]
        server.url = f"ws://127.0.0.1:{port}/client/register"
        yield server


@contextlib.asynccontextmanager
async def fake_agent(url: str, *args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.sandbox.agent", "--server", url, *args, cwd=REPO_ROOT, env=base_env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.terminate()
        try:
            await asyncio.wait_for(proc.communicate(), STEP)
        except TimeoutError:
            proc.kill()
            await proc.communicate()


# ---- the server side, by hand from the sheet (§3.3: Go's encoder, a newline after each frame) --------


def server_frame(id_: str, message: str, data: str = "") -> str:
    return orjson.dumps({"id": id_, "message": message, "data": data}).decode() + "\n"


def job_frame(request_id: str, content: str, conversation_id: str = "", parent_id: str | None = None) -> str:
    data = {"message_id": str(uuid.uuid4()), "conversation_id": conversation_id,
            "parent_id": parent_id or str(uuid.uuid4()), "content": content}
    return server_frame(request_id, "ChatGptRequest", orjson.dumps(data).decode())


async def recv(ws: ServerConnection) -> str:
    frame = await asyncio.wait_for(ws.recv(), STEP)
    assert isinstance(frame, str), "the agents send text frames (§3.1)"
    return frame


async def register(server: Server) -> tuple[ServerConnection, str]:
    """§3.4: offer X, read the reply; returns the socket and the id the agent answered with (X, or
    the id it stored from an earlier connection)."""
    ws = await server.accept()
    offered = str(uuid.uuid4())
    await ws.send(server_frame(offered, "Connection id"))
    reply = orjson.loads(await recv(ws))
    assert list(reply) == ["id", "message", "data"] and reply["message"] == "Connection id" and reply["data"] == ""
    return ws, reply["id"]


async def ping(ws: ServerConnection) -> None:
    ping_id = str(uuid.uuid4())
    await ws.send(server_frame(ping_id, "ping"))
    assert await recv(ws) == f'{{"id":"{ping_id}","message":"pong","data":""}}'


async def ask(ws: ServerConnection, content: str, conversation_id: str = "", parent_id: str | None = None
              ) -> dict[str, Any]:
    """Send one job and return the answer frame (its `data` decoded when it is a ChatGptResponse)."""
    request_id = str(uuid.uuid4())
    await ws.send(job_frame(request_id, content, conversation_id, parent_id))
    frame = orjson.loads(await recv(ws))
    assert frame["id"] == request_id
    if frame["message"] == "ChatGptResponse":
        assert isinstance(frame["data"], str)
        frame["data"] = orjson.loads(frame["data"])  # double-encoded (§3.3 A3)
    return frame


def is_uuid(value: str) -> bool:
    return str(uuid.UUID(value)) == value


UNKNOWN_ERROR = {"message": "error", "data": "Unknown error", "error": {}}


# ---- tests ------------------------------------------------------------------------------------------


async def test_registers_pongs_and_keeps_a_conversation() -> None:
    async with agent_server() as server, fake_agent(server.url, "--name", "alpha") as proc:
        ws, agent_id = await register(server)
        await ping(ws)
        first = await ask(ws, "Hello world")
        assert first["message"] == "ChatGptResponse" and list(first) == ["id", "message", "data"]
        answer = first["data"]
        assert list(answer) == ["response_id", "conversation_id", "content"]
        assert answer["content"] == "alpha #1: Hello world"
        assert is_uuid(answer["response_id"]) and is_uuid(answer["conversation_id"])

        # README rule (§4.1): conversation_id + parent_id = the previous response_id continues it
        await ping(ws)
        second = (await ask(ws, "And then?", answer["conversation_id"], answer["response_id"]))["data"]
        assert second["content"] == "alpha #2: And then?"
        assert second["conversation_id"] == answer["conversation_id"]
        assert second["response_id"] != answer["response_id"]

        # an unknown conversation, or a parent foreign to a known one: upstream refuses, the agent says so
        unknown = await ask(ws, "Who?", str(uuid.uuid4()), str(uuid.uuid4()))
        assert {k: v for k, v in unknown.items() if k != "id"} == UNKNOWN_ERROR
        foreign = await ask(ws, "Who?", answer["conversation_id"], str(uuid.uuid4()))
        assert {k: v for k, v in foreign.items() if k != "id"} == UNKNOWN_ERROR
        await ping(ws)  # the socket stays usable after an error (final Firefox agent)

        await ws.close()
        assert await asyncio.wait_for(proc.wait(), STEP) == 0  # no --reconnect-ms: the agent ends
        out = (await proc.stdout.read()).decode() if proc.stdout else ""
        assert f"agent alpha registered as {agent_id}\n" in out and "agent alpha closed\n" in out


async def test_delay_answers_pings_meanwhile_and_error_and_silent() -> None:
    async with agent_server() as server, fake_agent(server.url) as _proc:
        ws, _ = await register(server)
        slow_id = str(uuid.uuid4())
        await ws.send(job_frame(slow_id, "slow [agent delay_ms=300]"))
        await ping(ws)  # answered while the job waits: the pong comes before the answer
        slow = orjson.loads(await recv(ws))
        assert slow["id"] == slow_id and orjson.loads(slow["data"])["content"] == "agent #1: slow [agent delay_ms=300]"

        failed = await ask(ws, "x [agent error=Error: Too many requests in 1 hour. Try again later.]")
        assert failed == {"id": failed["id"], "message": "error",
                          "data": "Error: Too many requests in 1 hour. Try again later.", "error": {}}

        silent_id = str(uuid.uuid4())
        await ws.send(job_frame(silent_id, "[agent silent] nobody home"))
        after = await ask(ws, "still there?")  # the next frame answers the next job, not the silent one
        assert after["data"]["content"] == "agent #1: still there?"
        await ping(ws)

        typo = await ask(ws, "[agent delay=5]")
        assert typo["message"] == "error" and "unknown agent directive 'delay=5'" in typo["data"]


async def test_die_closes_the_socket_mid_job() -> None:
    async with agent_server() as server, fake_agent(server.url) as proc:
        ws, _ = await register(server)
        await ws.send(job_frame(str(uuid.uuid4()), "bye [agent delay_ms=50 die]"))
        await asyncio.wait_for(ws.wait_closed(), STEP)
        assert ws.close_code == 1001  # a page unload
        assert await asyncio.wait_for(proc.wait(), STEP) == 0


async def test_count_agents_own_their_conversations_and_reconnect_with_their_id() -> None:
    async with agent_server() as server, fake_agent(server.url, "--name", "acct", "--count", "2",
                                                     "--reconnect-ms", "0") as _proc:
        (ws_a, id_a), (ws_b, id_b) = await register(server), await register(server)
        assert id_a != id_b
        first_a = (await ask(ws_a, "hi"))["data"]
        first_b = (await ask(ws_b, "hi"))["data"]
        assert {first_a["content"], first_b["content"]} == {"acct-1 #1: hi", "acct-2 #1: hi"}
        name_a = first_a["content"].split(" ")[0]

        # a conversation lives in its account: the other agent does not know it
        crossed = await ask(ws_b, "again", first_a["conversation_id"], first_a["response_id"])
        assert {k: v for k, v in crossed.items() if k != "id"} == UNKNOWN_ERROR

        # A dies mid-job and comes back (a page reload): it reclaims its id, its conversation continues
        await ws_a.send(job_frame(str(uuid.uuid4()), "[agent die]"))
        await asyncio.wait_for(ws_a.wait_closed(), STEP)
        ws_a2, reclaimed = await register(server)  # offered a fresh id, answers with its stored one
        assert reclaimed == id_a
        again = (await ask(ws_a2, "again", first_a["conversation_id"], first_a["response_id"]))["data"]
        assert again["content"] == f"{name_a} #2: again"
        assert again["conversation_id"] == first_a["conversation_id"]
        await ping(ws_b)


async def test_a_server_that_is_not_there_is_exit_status_1() -> None:
    async with fake_agent(f"ws://127.0.0.1:{free_port()}/client/register") as proc:
        assert await asyncio.wait_for(proc.wait(), STEP) == 1


@pytest.mark.parametrize("args", [["--count", "0"], ["--reconnect-ms", "-1"]])
async def test_bad_arguments_are_a_usage_error(args: list[str]) -> None:
    async with fake_agent("ws://127.0.0.1:1/client/register", *args) as proc:
        assert await asyncio.wait_for(proc.wait(), STEP) == 2
