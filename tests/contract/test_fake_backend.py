"""The contract suite's fake upstream does what a job body tells it, and answers within proto/."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator

import proto
from libs.errors import SwitchyardError
from libs.worker_backend import Event, Item, Result, StreamEnd, WholeAnswer
from proto.messages import Job
from tests.contract.fake_backend import JOB_KIND, KINDS, FakeBackend, model_of, spec_for


def job(kind: str, job_id: str = "j1") -> Job:
    now = time.time()
    return {"type": "job", "job_id": job_id, "request_id": "r1", "kind": JOB_KIND[kind], "model": model_of(kind),
            "pool": "p", "reply": proto.reply_subject("e", job_id), "index_offset": 0, "created": now,
            "start_by": now + 5, "deadline": now + 10, "timeouts": {"first_token": 1, "idle": 1, "heartbeat": 1}}


async def run(backend: FakeBackend, fake: dict[str, Any], job_id: str = "j1") -> list[Item]:
    return [item async for item in backend.stream(job(backend.kind, job_id), {"fake": fake})]


@pytest.mark.parametrize("kind", KINDS)
async def test_each_kind_answers_in_its_own_shape(kind: str) -> None:
    backend = FakeBackend(kind)
    items = await run(backend, {"outputs": 2})
    assert isinstance(items[-1], StreamEnd)
    assert backend.serves == {model_of(kind): [JOB_KIND[kind]]}
    if kind == "chat":
        assert all(isinstance(item, list) for item in items[:-1])
        assert [c["delta"]["content"] for item in items[:-1] if isinstance(item, list) for c in item] == ["w0 ", "w1 "]
    elif kind == "native":
        assert all(isinstance(item, Event) for item in items[:-1])
        assert [item.data["text"] for item in items[:-1] if isinstance(item, Event)] == ["w0 ", "w1 "]
    else:
        assert isinstance(items[0], WholeAnswer)
        (result,) = items[1:-1]
        assert isinstance(result, Result)
        schema_id = proto.result_schema(kind)
        assert schema_id is not None
        assert list(Draft202012Validator(proto.schema(schema_id)).iter_errors(result.body)) == []


def test_per_try_overrides_apply_on_that_try_only() -> None:
    body = {"fake": {"outputs": 2, "tries": {"1": {"hang_after": 0}}}}
    assert spec_for(body, 1) == {"outputs": 2, "hang_after": 0}
    assert spec_for(body, 2) == {"outputs": 2}


async def test_failures_carry_the_code_and_retryable_flag_asked_for(tmp_path: Path) -> None:
    backend = FakeBackend("chat", events_file=str(tmp_path / "events"), worker_id="w")
    with pytest.raises(SwitchyardError) as raised:
        await run(backend, {"fail": "upstream_bad_request", "retryable": True, "fail_after": 1})
    assert (raised.value.code, raised.value.retryable) == ("upstream_bad_request", True)
    assert raised.value.to_wire()["retryable"] is True
    await backend.aclose()
    events = [orjson.loads(line) for line in (tmp_path / "events").read_bytes().splitlines()]
    assert [(e["event"], e["try"], e.get("code")) for e in events] == [
        ("started", 1, None), ("failed", 1, "upstream_bad_request")]


async def test_a_hang_lasts_until_cancelled_and_is_recorded_with_each_try(tmp_path: Path) -> None:
    backend = FakeBackend("embedding", events_file=str(tmp_path / "events"), worker_id="w")
    fake = {"tries": {"1": {"hang_after": 0}}}
    first = asyncio.ensure_future(run(backend, fake, "j2"))
    done, _ = await asyncio.wait({first}, timeout=0.2)
    assert not done  # hanging
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert backend.running == 0
    items = await run(backend, fake, "j2")  # the second try does not hang
    assert isinstance(items[1], Result)
    await backend.aclose()
    events = [orjson.loads(line) for line in (tmp_path / "events").read_bytes().splitlines()]
    assert [(e["event"], e["try"]) for e in events] == [
        ("started", 1), ("cancelled", 1), ("started", 2), ("finished", 2)]
