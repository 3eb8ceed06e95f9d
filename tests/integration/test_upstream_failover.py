"""Failover from a hung upstream (services/openai_worker/backend.py, config.py's limits).

Two sandboxes serve one model: one is told (POST /_sandbox/config) to accept every request and
never answer, the other is healthy. With the upstreams' own head limits, a request that meets the
hung one first moves on to the healthy one well before the job's first-token limit, stream or
not; and once it has hung, later requests go to the healthy one first.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from libs.devproc import Proc, free_port, spawn_python_service
from tests.conftest import AUTH_KEY, TIME_SCALE, Stack, wait_for_models

AUTH = {"authorization": f"Bearer {AUTH_KEY}"}
FIRST_TOKEN = 60 * TIME_SCALE  # the job's first-token limit (libs/timeouts.py default, scaled)
HEAD_LIMIT = 5  # the upstreams' first_byte_timeout and answer_timeout in the TOML, before scaling


def _sandbox(log_dir: Path, name: str) -> Proc:
    port = free_port()
    proc = spawn_python_service(name, "services.sandbox", env={"PORT": str(port)}, log_dir=log_dir / "failover",
                                health_url=f"http://127.0.0.1:{port}/healthz")
    proc.url = f"http://127.0.0.1:{port}"
    return proc


@pytest.fixture(scope="module")
def sandboxes(log_dir: Path) -> Iterator[tuple[Proc, Proc]]:
    hung, healthy = _sandbox(log_dir, "sandbox-hung"), _sandbox(log_dir, "sandbox-healthy")
    httpx.post(f"{hung.url}/_sandbox/config", json={"hang": 1}).raise_for_status()
    yield hung, healthy
    hung.stop(grace=3)
    healthy.stop()


async def events(sandbox: Proc, mark: str) -> list[dict[str, object]]:
    async with httpx.AsyncClient() as plain:
        return (await plain.get(f"{sandbox.url}/_sandbox/events", params={"mark": mark})).json()["events"]


def chat(model: str, text: str, stream: bool) -> dict[str, object]:
    return {"model": model, "stream": stream, "messages": [{"role": "user", "content": text}]}


def upstreams_toml(folder: Path, hung: Proc, healthy: Proc, model: str, limits: str) -> Path:
    """An OPENAI_WORKER_CONFIG with both sandboxes serving `model`, each with the TOML lines `limits`."""
    config = folder / "upstreams.toml"
    config.write_text("\n".join(
        f"[[upstreams]]\nname = '{name}'\nbase_url = '{sandbox.url}/v1'\napi_key = 'k-{name}-0123456789'\n"
        f"models = ['{model}']\n{limits}\n"
        for name, sandbox in (("hung", hung), ("healthy", healthy))
    ))
    return config


async def test_a_hung_upstream_is_failed_over_then_put_aside(
    stack: Stack, start_worker: Callable[..., Proc], sandboxes: tuple[Proc, Proc], tmp_path: Path
) -> None:
    hung, healthy = sandboxes
    config = upstreams_toml(tmp_path, hung, healthy, "tight-hang",
                            f"first_byte_timeout = {HEAD_LIMIT}\nanswer_timeout = {HEAD_LIMIT}\ncooldown = 300")
    worker = start_worker(name="failover-worker", pool="tight", models="unused", OPENAI_BASE_URL="",
                          OPENAI_WORKER_CONFIG=str(config))
    await wait_for_models(stack, {"tight-hang"})
    took: list[float] = []
    async with httpx.AsyncClient(base_url=stack.base_url, headers=AUTH, timeout=FIRST_TOKEN * 4) as http:
        # the rotation puts the hung one first for one of two requests (whole answers: next test)
        for i in range(2):
            started = time.monotonic()
            response = await http.post("/chat/completions", json=chat("tight-hang", f"s{i} [sandbox mark=fo-s]", True))
            took.append(time.monotonic() - started)
            assert response.status_code == 200 and "[DONE]" in response.text, response.text
            assert '"error"' not in response.text, response.text
        assert len(await events(hung, "fo-s")) == 1  # met once, then tried no more
        # put aside: later requests, stream or not, go to the healthy one first
        for i in range(6):
            stream = i % 2 == 0
            started = time.monotonic()
            body = chat("tight-hang", f"a{i} [sandbox mark=fo-a]", stream)
            response = await http.post("/chat/completions", json=body)
            took.append(time.monotonic() - started)
            assert response.status_code == 200, response.text
            assert stream or response.json()["choices"][0]["message"]["content"]
        assert await events(hung, "fo-a") == []
        assert len(await events(healthy, "fo-a")) == 6
        metrics = (await http.get(f"{worker.url}/metrics")).text
    # every request well within the job's first-token limit; the hang cost one head limit at most
    assert max(took) < FIRST_TOKEN / 2, took
    assert sorted(took)[-2] < HEAD_LIMIT * TIME_SCALE, took  # only one request met the hang
    assert 'switchyard_worker_upstream_errors_total{code="upstream_timeout",upstream="hung"} 1.0' in metrics
    log = worker.log()
    assert log.count("upstream hung failed (upstream_timeout") == 1, log
    assert "trying upstream healthy" in log and '"request_id"' in log and '"job_id"' in log


async def test_a_whole_answer_from_a_hung_upstream_is_failed_over(
    stack: Stack, start_worker: Callable[..., Proc], sandboxes: tuple[Proc, Proc], tmp_path: Path
) -> None:
    """Non-stream requests go upstream non-streamed, bounded by the whole answer's own limit."""
    hung, healthy = sandboxes
    config = upstreams_toml(tmp_path, hung, healthy, "tight-hang-whole", f"answer_timeout = {HEAD_LIMIT}")
    start_worker(name="failover-whole", pool="tight", models="unused", OPENAI_BASE_URL="",
                 OPENAI_WORKER_CONFIG=str(config))
    await wait_for_models(stack, {"tight-hang-whole"})
    async with httpx.AsyncClient(base_url=stack.base_url, headers=AUTH, timeout=FIRST_TOKEN * 4) as http:
        for i in range(2):  # the rotation puts the hung one first for one of them
            started = time.monotonic()
            response = await http.post("/chat/completions", json=chat("tight-hang-whole", f"w{i} [sandbox mark=fo-w]",
                                                                      False))
            assert response.status_code == 200, response.text
            assert time.monotonic() - started < FIRST_TOKEN / 2
    assert len(await events(hung, "fo-w")) == 1
    assert len(await events(healthy, "fo-w")) == 2


async def test_an_upstream_503_passes_its_retry_after_on(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url, headers=AUTH, timeout=30) as http:
        response = await http.post("/chat/completions",
                                   json=chat("sandbox-chat", "x [sandbox status=503 retry_after=9]", False))
    assert response.status_code == 502, response.text
    assert response.headers["retry-after"] == "9"
    assert response.json()["error"]["code"] == "upstream_error"
    # the attempt that ended the job is counted against the upstream that failed (its configured name)
    async with httpx.AsyncClient(timeout=5) as plain:
        scraped = [(await plain.get(f"{worker.url}/metrics")).text for worker in stack.procs[1:]]
    assert any('switchyard_worker_upstream_errors_total{code="upstream_error",upstream="env"}' in text
               for text in scraped)
