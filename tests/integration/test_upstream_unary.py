"""libs/openai_upstream's unary call with failover (`post_json`) and its size-limited GET
(`UpstreamClients.get`), against real OpenAI-compatible upstreams on loopback (tests/fake_openai.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry, generate_latest

from libs import secrets
from libs.errors import UpstreamBadRequest, UpstreamError, UpstreamProtocolError
from libs.openai_upstream import Failover, Upstream, UpstreamClients, post_json
from libs.worker_metrics import WorkerMetrics
from proto.messages import Job
from tests.conftest import metric
from tests.fake_openai import FakeUpstream, fake_upstream

KEY = "k-unary-0123456789abcdef"
JOB = cast(Job, {"job_id": "j1", "request_id": "r1", "model": "omni-moderation-latest", "kind": "moderation"})
REQUEST: dict[str, Any] = {"model": "ignored", "input": ["I will kill the process", "hello"]}


class Upstreams:
    def __init__(self, *fakes: FakeUpstream) -> None:
        self.list = [Upstream(name=f"u{i}", base_url=f.url, api_key=KEY, models=("omni-moderation-latest",))
                     for i, f in enumerate(fakes)]
        self.metrics = WorkerMetrics(CollectorRegistry(), "p")
        self.failover = Failover(self.list, self.metrics)
        self.clients = UpstreamClients(self.list)

    async def post(self) -> dict[str, Any]:
        return await post_json(self.clients, self.failover, JOB, "/moderations", REQUEST, expect="results")

    def count(self, name: str, **labels: str) -> float:
        text = generate_latest(self.metrics.registry).decode()
        if labels:
            return metric(text, name, **labels)
        return sum(float(line.split()[1]) for line in text.splitlines() if line.startswith(name + " "))


@pytest_asyncio.fixture
async def two() -> AsyncIterator[tuple[FakeUpstream, FakeUpstream]]:
    async with fake_upstream() as first, fake_upstream() as second:
        yield first, second


@pytest.fixture(autouse=True)
def fresh_secrets() -> Any:
    secrets.forget_all()
    yield
    secrets.forget_all()


async def test_a_500_before_the_answer_fails_over_to_the_next_upstream(
    two: tuple[FakeUpstream, FakeUpstream],
) -> None:
    first, second = two
    first.status = 500
    ups = Upstreams(first, second)  # the rotation starts with the first
    try:
        answer = await ups.post()
    finally:
        await ups.clients.aclose()
    assert [r["flagged"] for r in answer["results"]] == [True, False]
    assert len(first.requests) == 1 and len(second.requests) == 1
    path, headers, body = second.requests[0]
    assert path == "/v1/moderations" and headers["authorization"] == f"Bearer {KEY}"
    assert body == {**REQUEST, "model": "omni-moderation-latest"}  # the job's model goes upstream
    assert ups.count("switchyard_worker_upstream_errors_total", code="upstream_error", upstream="u0") == 1
    assert ups.count("switchyard_worker_upstream_first_token_seconds_count") == 1


async def test_the_last_upstreams_failure_ends_the_call_scrubbed(two: tuple[FakeUpstream, FakeUpstream]) -> None:
    first, second = two
    first.status = second.status = 503
    ups = Upstreams(first, second)
    try:
        with pytest.raises(UpstreamError) as caught:
            await ups.post()
    finally:
        await ups.clients.aclose()
    assert caught.value.upstream == "u1" and "answered 503" in caught.value.message
    assert KEY not in caught.value.message and "[redacted]" in caught.value.message  # the fake echoed it
    assert len(first.requests) == len(second.requests) == 1


async def test_a_400_passes_its_param_on_and_is_not_failed_over(two: tuple[FakeUpstream, FakeUpstream]) -> None:
    first, second = two
    first.status, first.param = 400, "input"
    ups = Upstreams(first, second)
    try:
        with pytest.raises(UpstreamBadRequest) as caught:
            await ups.post()
    finally:
        await ups.clients.aclose()
    assert caught.value.param == "input" and caught.value.upstream == "u0"
    assert caught.value.body()["error"]["param"] == "input"
    assert second.requests == []  # another upstream would refuse the same input


async def test_an_answer_without_its_list_is_a_protocol_error(two: tuple[FakeUpstream, FakeUpstream]) -> None:
    first, _ = two
    ups = Upstreams(first)
    try:
        with pytest.raises(UpstreamProtocolError, match="without data"):
            await post_json(ups.clients, ups.failover, JOB, "/moderations", REQUEST, expect="data")
    finally:
        await ups.clients.aclose()


# ---- the size-limited GET ----------------------------------------------------------------------


@pytest.mark.parametrize("chunked", [False, True])
async def test_get_reads_a_body_within_the_limit_and_refuses_a_larger_one(chunked: bool) -> None:
    async with fake_upstream(chunked=chunked) as fake:
        ups = Upstreams(fake)
        upstream = ups.list[0]
        try:
            body, content_type = await ups.clients.get(f"{fake.origin}/files/1000", limit=1000, upstream=upstream)
            assert (len(body), content_type) == (1000, "image/png")
            with pytest.raises(UpstreamProtocolError, match="more than 1000 bytes") as caught:
                await ups.clients.get(f"{fake.origin}/files/70000", limit=1000, upstream=upstream)
        finally:
            await ups.clients.aclose()
    assert caught.value.upstream == "u0"


async def test_get_of_a_non_2xx_or_a_non_http_url_is_an_error_that_never_names_the_url() -> None:
    async with fake_upstream() as fake:
        ups = Upstreams(fake)
        try:
            with pytest.raises(UpstreamError, match="gave status 404") as missing:
                await ups.clients.get(f"{fake.origin}/files/missing?sig=secret-signature", limit=10,
                                      upstream=ups.list[0])
            with pytest.raises(UpstreamProtocolError, match="not http"):
                await ups.clients.get("file:///etc/passwd", limit=10, upstream=ups.list[0])
        finally:
            await ups.clients.aclose()
    assert "secret-signature" not in missing.value.message and "/files/" not in missing.value.message
