"""The browser-agent protocol of ChatGPT-API-server (agent-protocol.md §3): frames written by hand from the sheet."""

from __future__ import annotations

import orjson
import pytest

from libs.agents.handshake import Registered, Registration, RegistrationState, new_id, valid_agent_id
from libs.agents.pending import JobTracker, Match, PingTracker
from libs.agents.protocol import (
    MAX_FRAME_CHARS,
    AgentError,
    ChatGptRequest,
    ChatGptResponse,
    ConnectionId,
    ConnectionIdReply,
    Ping,
    Pong,
    ProtocolError,
    encode,
    parse_agent_frame,
    parse_server_frame,
)

X = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
Y = "1b4e28ba-2fa1-41d2-883f-0016d3cca427"
R = "9f3a0c7e-5b1d-4e2a-8c3f-2d6b7e8a9c01"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ---- agent → server, §3.3 ---------------------------------------------------------------------------


def test_registration_reply_is_parsed() -> None:
    assert parse_agent_frame(f'{{"id": "{X}", "message": "Connection id", "data": ""}}') == ConnectionIdReply(X)


def test_pong_is_parsed() -> None:
    assert parse_agent_frame(f'{{"id": "{R}", "message": "pong", "data": ""}}') == Pong(R)


def test_answer_is_parsed_from_its_double_encoded_data() -> None:
    frame = (f'{{"id": "{R}", "message": "ChatGptResponse", "data": "{{\\"response_id\\":\\"9f3a\\",'
             f'\\"conversation_id\\":\\"c41e\\",\\"content\\":\\"Hello! How can I help?\\"}}"}}')
    assert parse_agent_frame(frame) == ChatGptResponse(R, "9f3a", "c41e", "Hello! How can I help?")


def test_answer_with_all_five_keys_and_with_none() -> None:
    data = orjson.dumps({"id": "i", "response_id": "r", "conversation_id": "c", "content": "x", "error": "boom"})
    frame = orjson.dumps({"id": R, "message": "ChatGptResponse", "data": data.decode()}).decode()
    assert parse_agent_frame(frame) == ChatGptResponse(R, "r", "c", "x", "boom", "i")
    empty = orjson.dumps({"id": R, "message": "ChatGptResponse", "data": "{}"}).decode()
    assert parse_agent_frame(empty) == ChatGptResponse(R)


def test_firefox_error_frames_of_both_agent_versions() -> None:
    final = f'{{"id": "{R}", "message": "error", "data": "Unknown error", "error": {{}}}}'
    assert parse_agent_frame(final) == AgentError(R, "Unknown error")
    older = f'{{"id": "{R}", "message": "error", "data": "Error: Too many requests in 1 hour. Try again later."}}'
    assert parse_agent_frame(older) == AgentError(R, "Error: Too many requests in 1 hour. Try again later.")


def test_unknown_keys_ignored_and_missing_data_is_empty() -> None:
    assert parse_agent_frame(f'{{"id": "{R}", "message": "pong", "data": "", "extra": [1]}}') == Pong(R)
    assert parse_agent_frame(f'{{"id": "{R}", "message": "pong"}}') == Pong(R)


# ---- server → agent, §3.3 ---------------------------------------------------------------------------


def test_server_frames_are_encoded_as_the_sheet_shows_them() -> None:
    assert encode(ConnectionId(X)) == f'{{"id":"{X}","message":"Connection id","data":""}}\n'
    assert encode(Ping(R)) == f'{{"id":"{R}","message":"ping","data":""}}\n'
    job = encode(ChatGptRequest(R, "m1", "", "p1", 'Hello "world" <&>'))
    assert job == (f'{{"id":"{R}","message":"ChatGptRequest","data":"{{\\"message_id\\":\\"m1\\",'
                   f'\\"conversation_id\\":\\"\\",\\"parent_id\\":\\"p1\\",'
                   f'\\"content\\":\\"Hello \\\\\\"world\\\\\\" <&>\\"}}"}}\n')
    outer = orjson.loads(job)
    assert list(outer) == ["id", "message", "data"]
    assert orjson.loads(outer["data"]) == {"message_id": "m1", "conversation_id": "", "parent_id": "p1",
                                           "content": 'Hello "world" <&>'}


def test_server_frames_are_parsed_on_the_agent_side() -> None:
    assert parse_server_frame(f'{{"id": "{X}", "message": "Connection id", "data": ""}}\n') == ConnectionId(X)
    assert parse_server_frame(f'{{"id": "{R}", "message": "ping", "data": ""}}') == Ping(R)
    frame = (f'{{"id": "{R}", "message": "ChatGptRequest", "data": "{{\\"message_id\\":\\"m\\",'
             f'\\"conversation_id\\":\\"\\",\\"parent_id\\":\\"p\\",\\"content\\":\\"Hello world\\"}}"}}')
    assert parse_server_frame(frame) == ChatGptRequest(R, "m", "", "p", "Hello world")


@pytest.mark.parametrize("msg", [
    ConnectionIdReply(X), Pong(R), ChatGptResponse(R, "r", "c", "héllo\n\"x\""),
    ChatGptResponse(R, "r", "c", "", error="upstream 429", data_id="d"), AgentError(R, "Unknown error"),
])
def test_agent_messages_round_trip(msg: object) -> None:
    assert parse_agent_frame(encode(msg)) == msg  # type: ignore[arg-type]


@pytest.mark.parametrize("msg", [ConnectionId(X), Ping(R), ChatGptRequest(R, "m", "c", "p", "🙂 \u2028 x")])
def test_server_messages_round_trip(msg: object) -> None:
    assert parse_server_frame(encode(msg)) == msg  # type: ignore[arg-type]


def test_encoding_something_else_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        encode("pong")  # type: ignore[arg-type]


# ---- refused frames -------------------------------------------------------------------------------------

SECRET = "sk-secret-token-123"


@pytest.mark.parametrize("frame", [
    f'{{"id": "{R}", "message": "pong", "data": "{SECRET}"',  # bad JSON
    f'["{SECRET}"]',  # not an object
    f'"{SECRET}"',
    f'{{"message": "pong", "data": "{SECRET}"}}',  # no id
    '{"id": "", "message": "pong", "data": ""}',  # empty id
    f'{{"id": 7, "message": "pong", "data": "{SECRET}"}}',  # wrong types
    f'{{"id": "{R}", "message": ["{SECRET}"], "data": ""}}',
    f'{{"id": "{R}", "data": ""}}',  # no kind
    f'{{"id": "{R}", "message": "pong", "data": {{"k": "{SECRET}"}}}}',
    f'{{"id": "{R}", "message": "{SECRET}", "data": ""}}',  # unknown kind
    f'{{"id": "{R}", "message": "ping", "data": ""}}',  # a server kind from an agent
    f'{{"id": "{R}", "message": "ChatGptRequest", "data": ""}}',
    f'{{"id": "{R}", "message": "ChatGptResponse", "data": "{SECRET}"}}',  # data not JSON
    f'{{"id": "{R}", "message": "ChatGptResponse", "data": "[\\"{SECRET}\\"]"}}',  # data not an object
    f'{{"id": "{R}", "message": "ChatGptResponse", "data": "{{\\"content\\": 5, \\"x\\": \\"{SECRET}\\"}}"}}',
])
def test_malformed_agent_frames_are_refused_without_echo(frame: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_agent_frame(frame)
    assert isinstance(caught.value, ValueError)
    assert SECRET not in str(caught.value)


def test_refusal_names_the_frame_id_when_it_was_readable() -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_agent_frame(f'{{"id": "{R}", "message": "ChatGptResponse", "data": "nope"}}')
    assert caught.value.frame_id == R
    with pytest.raises(ProtocolError) as caught:
        parse_agent_frame(f'{{"id": "{R}", "message": "hello", "data": ""}}')
    assert caught.value.frame_id == R and "'hello'" in str(caught.value)
    with pytest.raises(ProtocolError) as caught:
        parse_agent_frame("{")
    assert caught.value.frame_id is None


def test_oversized_and_binary_frames_are_refused() -> None:
    big = orjson.dumps({"id": R, "message": "ChatGptResponse", "data": "x" * MAX_FRAME_CHARS}).decode()
    with pytest.raises(ProtocolError, match="too large"):
        parse_agent_frame(big)
    with pytest.raises(ProtocolError, match="too large"):
        parse_agent_frame(encode(Pong(R)), max_chars=10)
    with pytest.raises(ProtocolError, match="binary"):
        parse_agent_frame(encode(Pong(R)).encode())


def test_server_request_with_missing_or_mistyped_keys_is_refused() -> None:
    for data in ('{"message_id":"m","conversation_id":"","parent_id":"p"}',
                 '{"message_id":"m","conversation_id":null,"parent_id":"p","content":"c"}'):
        with pytest.raises(ProtocolError):
            parse_server_frame(orjson.dumps({"id": R, "message": "ChatGptRequest", "data": data}).decode())


# ---- registration, §3.4 ---------------------------------------------------------------------------------


def test_registration_of_a_new_agent() -> None:
    clock = FakeClock()
    reg = Registration(X, clock=clock)
    assert reg.first_frame() == f'{{"id":"{X}","message":"Connection id","data":""}}\n'
    assert reg.state is RegistrationState.OFFERED
    assert reg.remaining() == 10.0
    clock.now += 3
    done = reg.receive(f'{{"id":"{X}","message":"Connection id","data":""}}')
    assert done == Registered(X, reconnect=False) == reg.result
    assert reg.state is RegistrationState.REGISTERED
    assert not reg.expired()
    with pytest.raises(ProtocolError, match="already registered"):
        reg.receive(f'{{"id":"{X}","message":"Connection id","data":""}}')


def test_a_reclaimed_id_is_a_reconnect_and_is_lowercased() -> None:
    reg = Registration(X, clock=FakeClock())
    assert reg.receive(f'{{"id":"{Y.upper()}","message":"Connection id","data":""}}') == Registered(Y, True)


def test_offered_id_is_a_fresh_uuid_by_default() -> None:
    first, second = Registration(), Registration()
    assert first.offered_id != second.offered_id
    assert valid_agent_id(first.offered_id) == first.offered_id
    assert valid_agent_id(new_id()) is not None


@pytest.mark.parametrize("frame", [
    f'{{"id":"{X}","message":"pong","data":""}}',  # not the reply (the seed would accept it)
    '{"id":"agents.>","message":"Connection id","data":""}',  # not a UUID: a subject wildcard
    '{"id":"a b","message":"Connection id","data":""}',
    "not json",
])
def test_a_wrong_first_frame_fails_the_registration(frame: str) -> None:
    reg = Registration(X, clock=FakeClock())
    with pytest.raises(ProtocolError):
        reg.receive(frame)
    assert reg.state is RegistrationState.FAILED and reg.result is None


def test_registration_deadline() -> None:
    clock = FakeClock()
    reg = Registration(X, clock=clock, timeout=2.0)
    clock.now += 1.999
    assert not reg.expired()
    assert reg.remaining() == pytest.approx(0.001)
    clock.now += 0.001
    assert reg.expired() and reg.state is RegistrationState.FAILED
    assert reg.remaining() == 0.0
    with pytest.raises(ProtocolError):
        reg.receive(f'{{"id":"{X}","message":"Connection id","data":""}}')


# ---- pings and jobs, §3.5/§3.6/§4.3 ---------------------------------------------------------------------


def test_ping_then_pong_in_time() -> None:
    clock = FakeClock()
    ids = iter(["p1", "p2"])
    pings = PingTracker(clock=clock, make_id=lambda: next(ids))
    ping_id, frame = pings.send()
    assert (ping_id, frame) == ("p1", '{"id":"p1","message":"ping","data":""}\n')
    assert pings.pending == ("p1",) and pings.next_deadline() == 1005.0
    clock.now += 4.9
    assert pings.expire() == []
    assert pings.receive(Pong("p1")) is Match.MATCHED
    assert pings.last_pong == 1004.9 and pings.pending == () and pings.next_deadline() is None
    assert pings.receive(Pong("p1")) is Match.UNKNOWN  # answered already


def test_a_ping_expires_after_five_seconds_and_its_pong_is_late() -> None:
    clock = FakeClock()
    pings = PingTracker(clock=clock)
    first, _ = pings.send()
    clock.now += 2
    second, _ = pings.send()
    clock.now += 3
    assert pings.expire() == [first]
    assert pings.expire() == []  # reported once
    assert pings.receive(Pong(first)) is Match.LATE
    assert pings.last_pong is None
    assert pings.receive(Pong("stray")) is Match.UNKNOWN
    assert pings.receive(Pong(second)) is Match.MATCHED  # the other ping was not disturbed (§4.6)


def test_jobs_are_matched_by_id_whatever_arrives_between() -> None:
    clock = FakeClock()
    jobs = JobTracker(clock=clock)
    frame_a = jobs.send(ChatGptRequest("ja", "m", "", "p", "a"))
    jobs.send(ChatGptRequest("jb", "m", "c", "p", "b"))
    assert parse_server_frame(frame_a) == ChatGptRequest("ja", "m", "", "p", "a")
    assert jobs.receive(ChatGptResponse("jb", "r", "c", "B")) is Match.MATCHED  # out of order: fine
    clock.now += 119
    assert jobs.expire() == []
    jobs.cancel("nothing")
    clock.now += 1
    assert jobs.expire() == ["ja"]
    assert jobs.receive(AgentError("ja", "Unknown error")) is Match.LATE


def test_cancelled_job_is_not_reported() -> None:
    clock = FakeClock()
    jobs = JobTracker(clock=clock, timeout=1)
    jobs.send(ChatGptRequest("j", "m", "", "p", "a"))
    jobs.cancel("j")
    clock.now += 2
    assert jobs.expire() == [] and jobs.receive(ChatGptResponse("j")) is Match.UNKNOWN


# ---- the two independent readings of the sheet agree (libs/agents vs the sandbox's fake agent) ---------


def test_the_fake_agents_frames_parse_and_the_servers_frames_read_on_its_side() -> None:
    from services.sandbox.agent import wire

    assert parse_agent_frame(wire.frame(X, "Connection id", "")) == ConnectionIdReply(X)
    assert parse_agent_frame(wire.frame(R, "pong", "")) == Pong(R)
    assert parse_agent_frame(wire.answer_frame(R, "r", "c", "hé \"x\"")) == ChatGptResponse(R, "r", "c", "hé \"x\"")
    assert parse_agent_frame(wire.error_frame(R, "Unknown error")) == AgentError(R, "Unknown error")
    job = ChatGptRequest(R, "m", "c", "p", "🙂 <&>")
    read = wire.read(encode(job))
    assert (read["id"], read["message"]) == (R, "ChatGptRequest")
    assert wire.read_job(read["data"]) == {"message_id": "m", "conversation_id": "c", "parent_id": "p",
                                           "content": "🙂 <&>"}
