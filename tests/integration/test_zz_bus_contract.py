"""Runs last in the integration tier: everything the session put on the bus matched proto/.

(The wiretap fixture also fails the session at teardown on any violation; this test names the
coverage: each message type of the contract was actually exercised.)
"""

from __future__ import annotations

import orjson

import proto
from tests.conftest import Stack
from tests.wiretap import Wiretap


def test_every_message_matched_the_contract(stack: Stack, wiretap: Wiretap) -> None:
    assert not wiretap.violations, "\n".join(wiretap.violations[:20])


def test_every_application_subject_was_exercised(stack: Stack, wiretap: Wiretap) -> None:
    schemas = {s["schema"] for s in proto.contract()["subjects"]}
    assert schemas <= set(wiretap.seen), f"never seen on the bus: {schemas - set(wiretap.seen)}"
    kinds = {m["type"] for s, m in wiretap.messages if s == "switchyard.v1.reply"}
    # `event` comes from the contract suite's fake workers (tests/contract) when it runs too
    assert kinds >= {"start", "delta", "result", "heartbeat", "end", "error", "fragment"}
    # every kind of result body travelled, and was checked against its schema
    assert {proto.result_schema(k) for k in ("embedding", "image", "moderation")} <= set(wiretap.seen)
    assert wiretap.seen["fragmented"] > 0  # a payload above the max payload, joined and checked
    assert wiretap.seen["system"] > 0  # JetStream API and acks travelled too
    assert wiretap.seen["batch"] > 0  # workers sent what they had at one moment as one message


def test_wiretap_rejects_what_proto_does_not_name() -> None:
    tap = Wiretap()
    tap.check("sy.v1.unknown", b"{}")
    tap.check("sy.v1.cancel", b'{"type": "cancel"}')
    tap.check("sy.v1.announce", b"not json")
    tap.check("sy.v1.reply.e.t", b"", {"Status": "503"})  # only the puback subject may carry status
    tap.check("sy.v1.puback.e.t", b"")  # an empty body without a status is no NATS status message
    tap.check("sy.v1.puback.e.t", b'{"stream": "ELSEWHERE", "seq": 1}')
    assert len(tap.violations) == 6
    tap.check("sy.v1.puback.e.t", b"", {"Status": "503"})
    tap.check("sy.v1.puback.e.t", b'{"stream": "SY_V1_JOBS", "seq": 1}')
    assert len(tap.violations) == 6
    # reply batches: 2+ replies of one job and attempt, seq consecutive, each valid
    hb = {"type": "heartbeat", "job_id": "j", "attempt": 1}
    tap.check("sy.v1.reply.e.t", orjson.dumps([{**hb, "seq": 1}, {**hb, "seq": 2}]))
    assert len(tap.violations) == 6
    tap.check("sy.v1.reply.e.t", orjson.dumps([{**hb, "seq": 1}]))  # a batch of one
    tap.check("sy.v1.reply.e.t", orjson.dumps([{**hb, "seq": 1}, {**hb, "seq": 3}]))  # a gap
    tap.check("sy.v1.reply.e.t", orjson.dumps([{**hb, "seq": 1}, {**hb, "seq": 2, "attempt": 2}]))
    tap.check("sy.v1.cancel", orjson.dumps([{"type": "cancel"}, {"type": "cancel"}]))  # not a batch subject
    assert len(tap.violations) == 10
    # fragments: parts in order, and the payload they join to is checked like any other
    frag = {"type": "fragment", "job_id": "j", "attempt": 1, "seq": 1}
    joined = orjson.dumps([{**hb, "seq": 1}, {**hb, "seq": 2}]).decode()
    tap.check("sy.v1.reply.e.t", orjson.dumps({**frag, "part": 0, "last": False, "data": joined[:9]}))
    tap.check("sy.v1.reply.e.t", orjson.dumps({**frag, "part": 1, "last": True, "data": joined[9:]}))
    assert len(tap.violations) == 10 and tap.seen["fragmented"] == 1
    tap.check("sy.v1.reply.e.t", orjson.dumps({**frag, "part": 1, "last": True, "data": "{}"}))  # part 0 missing
    tap.check("sy.v1.reply.e.t", orjson.dumps({**frag, "part": 0, "last": True, "data": '{"type": "x"}'}))
    assert len(tap.violations) == 12
