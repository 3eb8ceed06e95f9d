"""libs.bus_write against a real nats-server (a private one: the subjects here are not part of
proto/, which the session's wiretap enforces): what goes on the wire, the order of messages
against nats-py's own queue, and behaviour while disconnected and once closed."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import nats
import orjson
import pytest
from nats import errors as nats_errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

import proto
from libs.bus import connect, ensure_job_stream
from libs.bus_write import DirectPublisher, Outgoing, header_block, pub_command
from libs.devproc import Proc, free_port, start_nats_server
from tests.conftest import start_worker_proc


async def collect(nc: NATS, subject: str) -> list[Msg]:
    """The messages that arrive on `subject` from now on, in arrival order."""
    seen: list[Msg] = []

    async def on_msg(msg: Msg) -> None:
        seen.append(msg)

    await nc.subscribe(subject, cb=on_msg)
    await nc.flush()
    return seen


async def wait_for(seen: list[Msg], count: int, within: float = 5.0) -> None:
    for _ in range(int(within / 0.01)):  # bounded
        if len(seen) >= count:
            break
        await asyncio.sleep(0.01)
    assert len(seen) == count, f"{len(seen)} of {count} messages arrived"


def test_commands_are_the_nats_protocol() -> None:
    assert pub_command("a.b", b"hi") == b"PUB a.b  2\r\nhi\r\n"
    assert pub_command("a.b", b"hi", reply="r.1") == b"PUB a.b r.1 2\r\nhi\r\n"
    headers = header_block({"Sy-Request-Id": "req-1", "Nats-Msg-Id": "j1"})
    assert headers == b"NATS/1.0\r\nSy-Request-Id: req-1\r\nNats-Msg-Id: j1\r\n\r\n"
    command = pub_command("a.b", b"hi", headers=headers)
    assert command == b"HPUB a.b  %d %d\r\n" % (len(headers), len(headers) + 2) + headers + b"hi\r\n"
    assert pub_command("a.b", b"") == b"PUB a.b  0\r\n\r\n"


BAD_HEADERS = [{"Bad Name": "x"}, {"Name:": "x"}, {"": "x"}, {"Ok": "line\r\nPUB x 0"}, {"Ok": "a\nb"}]


@pytest.mark.parametrize("headers", BAD_HEADERS)
def test_a_header_that_could_break_the_protocol_is_refused(headers: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        header_block(headers)


async def test_a_publish_with_such_a_header_is_refused_in_either_mode(private_nc: NATS, nats_apis: str) -> None:
    seen = await collect(private_nc, "write.bad")
    publisher = DirectPublisher(private_nc)
    for headers in BAD_HEADERS:  # nats-py's own publish would strip the line breaks and send it
        with pytest.raises(ValueError):
            await publisher.publish("write.bad", b"x", headers=headers)
    await publisher.publish("write.bad", b"fine")
    await wait_for(seen, 1)
    assert seen[0].data == b"fine"


async def test_the_mode_follows_the_switch(private_nc: NATS, nats_apis: str) -> None:
    assert DirectPublisher(private_nc).direct is (nats_apis == "private")


async def test_a_publish_arrives_with_headers_reply_and_payload(private_nc: NATS, nats_apis: str) -> None:
    seen = await collect(private_nc, "write.one")
    publisher = DirectPublisher(private_nc)
    payload = bytes(range(256)) * 40  # binary and larger than one read of nats-py
    await publisher.publish("write.one", payload, reply="write.reply.7", headers={"Sy-Request-Id": "req.ü-1"})
    await wait_for(seen, 1)
    msg = seen[0]
    assert msg.data == payload and msg.reply == "write.reply.7"
    assert msg.headers == {"Sy-Request-Id": "req.ü-1"}


async def test_messages_published_together_arrive_as_separate_messages_in_order(
    private_nc: NATS, nats_apis: str
) -> None:
    """A worker's last reply and its job's ack: one write (direct, or nats-py's flusher's next)."""
    seen = await collect(private_nc, "write.pair.*")
    publisher = DirectPublisher(private_nc)
    together = [publisher.message("write.pair.a", b"reply", "write.r"), Outgoing("write.pair.b", b"+ACK")]
    await publisher.publish_many(together)
    # direct: on the socket already; public: both queued in this step, for nats-py's flusher's one write
    queued = 0 if nats_apis == "private" else sum(len(pub_command(*m)) for m in together)
    assert private_nc.pending_data_size == queued
    await wait_for(seen, 2)
    assert [(m.subject, m.data, m.reply) for m in seen] == [("write.pair.a", b"reply", "write.r"),
                                                            ("write.pair.b", b"+ACK", "")]


async def test_it_queues_behind_what_nats_py_has_not_written_yet(private_nc: NATS, nats_apis: str) -> None:
    seen = await collect(private_nc, "write.order")
    publisher = DirectPublisher(private_nc)
    expected = []
    for i in range(50):
        # nats-py's publish only queues (its flusher writes a loop turn later): a direct write
        # now would overtake it, so the publisher must queue too, and order is kept
        await private_nc.publish("write.order", b"py-%d" % i)
        assert not publisher.write_now(pub_command("write.order", b"never"))
        await publisher.publish("write.order", b"direct-%d" % i)
        expected += [b"py-%d" % i, b"direct-%d" % i]
    await private_nc.flush()
    await wait_for(seen, 100)
    assert [m.data for m in seen] == expected
    # all written: direct again (never, without the fast path)
    assert publisher.write_now(pub_command("write.order", b"last")) is (nats_apis == "private")


async def test_a_closed_connection_raises_like_nats_py(private_nc: NATS, nats_apis: str) -> None:
    publisher = DirectPublisher(private_nc)
    await private_nc.close()
    with pytest.raises(nats_errors.ConnectionClosedError):
        await publisher.publish("write.closed", b"x")
    with pytest.raises(nats_errors.ConnectionClosedError):
        await publisher.publish_many([Outgoing("write.closed", b"x")])


async def test_while_disconnected_it_is_buffered_and_sent_after_the_reconnect(log_dir: Path, nats_apis: str) -> None:
    port = free_port()
    run_dir = log_dir / f"write-reconnect-{nats_apis}"
    server = start_nats_server(log_dir=run_dir, store_dir=run_dir / "js", port=port)
    client = await nats.connect(server.url, reconnect_time_wait=0.1, max_reconnect_attempts=-1)
    try:
        seen = await collect(client, "write.later")
        server.stop()
        for _ in range(200):  # bounded: nats-py notices the closed socket quickly
            if not client.is_connected:
                break
            await asyncio.sleep(0.01)
        assert not client.is_connected
        publisher = DirectPublisher(client)
        assert not publisher.write_now(pub_command("write.later", b"x"))
        await publisher.publish("write.later", b"kept")  # buffered by nats-py
        await publisher.publish_many([Outgoing("write.later", b"kept too")])
        server = start_nats_server(log_dir=run_dir, store_dir=run_dir / "js2", port=port)
        await wait_for(seen, 2, within=10)
        assert [m.data for m in seen] == [b"kept", b"kept too"]
    finally:
        await client.close()
        server.stop()


def job(reply: str, model: str = "sandbox-chat") -> dict[str, object]:
    now = time.time()
    return {
        "type": "job", "job_id": "j" + uuid.uuid4().hex, "request_id": "req-w", "kind": "chat", "model": model,
        "pool": "wpool", "reply": reply, "index_offset": 0, "created": now, "start_by": now + 30, "deadline": now + 60,
        "timeouts": {"first_token": 30, "idle": 30, "heartbeat": 5},
        "body": {"model": model, "messages": [{"role": "user", "content": "hi"}]},
    }


@pytest.mark.parametrize("switch", ["1", "0"], ids=["private", "public"])
async def test_a_worker_drops_a_job_whose_reply_subject_would_break_the_protocol(
    private_nats: Proc, sandbox: Proc, log_dir: Path, switch: str
) -> None:
    """A worker writes a job's reply subject to the wire as it is: a job whose `reply` is not one
    proto/ builds (here, one smuggling a command) is terminated unanswered; the next job is served."""
    client = await nats.connect(private_nats.url)
    js = client.jetstream()
    await ensure_job_stream(js, max_age=600)
    worker = start_worker_proc(private_nats.url, sandbox.url, log_dir / "write", name=f"write-worker-{switch}",
                               pool="wpool", models="sandbox-chat", SY_PRIVATE_APIS=switch)
    try:
        smuggled = await collect(client, "evil")
        replies = await collect(client, "sy.v1.reply.wedge.*")
        bad = job("sy.v1.reply.wedge.t1 5\r\nPUB evil 4\r\nboom\r\nPUB x")
        await client.publish(proto.job_subject("wpool"), orjson.dumps(bad))
        good = job("sy.v1.reply.wedge.t2")
        await client.publish(proto.job_subject("wpool"), orjson.dumps(good))
        await wait_for(replies, 1, within=10)
        assert {m.subject for m in replies} == {"sy.v1.reply.wedge.t2"}
        assert b'"type":"end"' in replies[0].data
        assert smuggled == []
        info = await js.stream_info(proto.STREAM_JOBS)
        assert info.state.messages == 0  # both jobs left the work queue: one terminated, one acked
    finally:
        worker.stop()
        await client.close()


async def test_a_message_above_the_max_payload_is_refused_before_it_reaches_the_server(
    private_nc: NATS, nats_apis: str
) -> None:
    seen = await collect(private_nc, "write.big")
    publisher = DirectPublisher(private_nc)
    headers = {"A": "b"}
    fits = b"x" * (private_nc.max_payload - len(header_block(headers)))
    with pytest.raises(nats_errors.MaxPayloadError):
        await publisher.publish("write.big", fits + b"x", headers=headers)  # headers count too
    with pytest.raises(nats_errors.MaxPayloadError):
        publisher.message("write.big", b"x" * (private_nc.max_payload + 1))
    await publisher.publish("write.big", fits, headers=headers)
    await publisher.publish_many([publisher.message("write.big", b"x" * private_nc.max_payload)])
    await wait_for(seen, 2)
    assert [len(m.data) for m in seen] == [len(fits), private_nc.max_payload]
    assert private_nc.is_connected


@pytest.mark.parametrize("nats_apis", ["private"], indirect=True)  # the fast path's own behaviour
async def test_only_the_first_write_of_a_loop_step_is_direct_the_rest_go_out_together(
    private_nc: NATS, nats_apis: str
) -> None:
    seen = await collect(private_nc, "write.step")
    publisher = DirectPublisher(private_nc)
    assert publisher.write_now(pub_command("write.step", b"first"))
    assert not publisher.write_now(pub_command("write.step", b"never"))  # a busy step: nats-py batches the rest
    queued = 0
    for i in range(20):
        await publisher.publish("write.step", b"queued-%d" % i)
        queued += len(pub_command("write.step", b"queued-%d" % i))
    assert private_nc.pending_data_size == queued  # waiting for nats-py's flusher, to go out in one write
    await wait_for(seen, 21)
    assert [m.data for m in seen] == [b"first"] + [b"queued-%d" % i for i in range(20)]
    await asyncio.sleep(0)  # a new step, nothing pending: direct again
    assert publisher.write_now(pub_command("write.step", b"next"))
    await wait_for(seen, 22)


async def test_services_connect_with_nats_py_s_own_client(private_nats: Proc) -> None:
    client = await connect(private_nats.url, "write-headers")
    try:
        assert type(client) is NATS  # no subclass: the header reader of its own measured below the noise
        seen = await collect(client, "write.headers")
        await client.publish("write.headers", b"x", headers={"Sy-Request-Id": "req-7", "Nats-Msg-Id": "j7"})
        await wait_for(seen, 1)
        assert seen[0].headers == {"Sy-Request-Id": "req-7", "Nats-Msg-Id": "j7"}
    finally:
        await client.close()
