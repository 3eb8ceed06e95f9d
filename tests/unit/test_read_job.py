"""`read_job`: the fields the worker runtime reads, checked on every job before it runs."""

from __future__ import annotations

from typing import Any

import pytest

from libs.worker_runtime import read_job


def job(**patch: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "type": "job", "job_id": "j1", "request_id": "r1", "kind": "chat", "model": "m", "pool": "p",
        "reply": "sy.v1.reply.edge.j1", "index_offset": 0, "created": 1.0, "start_by": 2, "deadline": 3.0,
        "timeouts": {"first_token": 1, "idle": 1.5, "heartbeat": 0.5}, "body": {"model": "m"},
    }
    base.update(patch)
    return {k: v for k, v in base.items() if v is not None}


def test_a_job_as_the_edge_writes_it_is_read_as_it_is() -> None:
    good = job()
    assert read_job(good) is good
    by_ref = job(body=None, body_ref={"store": "s", "name": "n"})
    assert read_job(by_ref) is by_ref


@pytest.mark.parametrize("patch", [
    {"reply": "sy.v1.reply.edge.j1 5\r\nPUB evil 4"}, {"reply": None}, {"job_id": ""}, {"job_id": 7},
    {"start_by": "soon"}, {"deadline": True}, {"deadline": None}, {"index_offset": 1.5},
    {"timeouts": {"first_token": 1, "idle": 1}}, {"timeouts": [1, 2, 3]}, {"timeouts": {"first_token": None,
     "idle": 1, "heartbeat": 1}}, {"body": None}, {"body": "text"},
], ids=repr)
def test_a_job_missing_a_field_or_with_a_wrong_type_is_refused(patch: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="lacks a field"):
        read_job(job(**patch))
