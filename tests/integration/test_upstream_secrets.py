"""An upstream's key never reaches a client or a log, whatever its shape (libs/secrets.py).

The upstream here is a sandbox of this module's own with no key of its own (open), so it accepts
whatever key a worker sends and echoes it in every error (`echo_key=1`): in 4xx/5xx bodies and in
an SSE error event mid-stream (`error_after`). The keys have none of the shapes the redaction
patterns know (`sk-…`, bearer tokens): only scrubbing what the worker holds, verbatim, stops them.
Each model has two upstreams with the same key, so every failure is also a logged failover.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from libs.devproc import Proc, free_port, spawn_python_service
from tests.conftest import AUTH_KEY, Stack, wait_for_models

AUTH = {"authorization": f"Bearer {AUTH_KEY}"}
KEYS = {  # model -> a key shaped like a real provider's (none of them real)
    "tight-azure": "3f9a1c27e4b8d6050a7e2c914b6d8f03",
    "tight-groq": "gsk_Q7vT2mXc9LpR4sWz8NbK1yHd6FjG3aUe5oIq0rEt",
    "tight-gemini": "AIzaSyB3x-Qk9v_T7mZp2LrW8cN4sJd6HfY1aGe",
    "tight-hf": "hf_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
    "tight-xai": "xai-Zq4Wm8Tn2Vb6Yc0Xd5Re9Uf3Gh7Jk1Lp",
}
# every error path: statuses with and without a message the client sees, and mid-stream errors
# before (error_after=0) and after (error_after=2) the first token
FAULTS = ["status=400", "status=401", "status=403", "status=429", "status=500", "status=502", "status=503",
          "error_after=0", "error_after=2 token_delay_ms=30"]


@pytest.fixture(scope="module")
def open_sandbox(log_dir: Path) -> Iterator[Proc]:
    port = free_port()
    proc = spawn_python_service("sandbox-open", "services.sandbox", env={"PORT": str(port)},
                                log_dir=log_dir / "secrets", health_url=f"http://127.0.0.1:{port}/healthz")
    proc.url = f"http://127.0.0.1:{port}"
    yield proc
    proc.stop()


def upstreams_toml(sandbox_url: str) -> str:
    tables = []
    for model, key in KEYS.items():
        for side in ("a", "b"):
            tables.append(f"[[upstreams]]\nname = '{model}-{side}'\nbase_url = '{sandbox_url}/v1'\n"
                          f"api_key = '{key}'\nmodels = ['{model}']\n")
    return "\n".join(tables)


async def test_the_sandbox_echoes_the_key(open_sandbox: Proc) -> None:
    """The premise: without the gateway's scrubbing the key is in the upstream's answer."""
    key = KEYS["tight-azure"]
    async with httpx.AsyncClient(headers={"authorization": f"Bearer {key}"}) as http:
        response = await http.post(f"{open_sandbox.url}/v1/chat/completions", json={
            "model": "m", "messages": [{"role": "user", "content": "x [sandbox status=502 echo_key=1]"}]})
        streamed = await http.post(f"{open_sandbox.url}/v1/chat/completions", json={
            "model": "m", "stream": True,
            "messages": [{"role": "user", "content": "x [sandbox error_after=1 echo_key=1]"}]})
    assert response.status_code == 502 and key in response.text
    assert streamed.status_code == 200 and key in streamed.text and "[DONE]" not in streamed.text


async def test_held_keys_never_reach_the_client_nor_the_log(
    stack: Stack, start_worker: Callable[..., Proc], open_sandbox: Proc, tmp_path: Path
) -> None:
    config = tmp_path / "upstreams.toml"
    config.write_text(upstreams_toml(open_sandbox.url))
    worker = start_worker(name="secrets-worker", pool="tight", models="unused", OPENAI_BASE_URL="",
                          OPENAI_WORKER_CONFIG=str(config))
    await wait_for_models(stack, set(KEYS))
    seen: list[tuple[str, str, bool, int]] = []
    async with httpx.AsyncClient(base_url=stack.base_url, headers=AUTH, timeout=30) as http:
        for model, key in KEYS.items():
            for fault in FAULTS:
                for stream in (False, True):
                    body = {"model": model, "stream": stream,
                            "messages": [{"role": "user", "content": f"x [sandbox {fault} echo_key=1]"}]}
                    response = await http.post("/chat/completions", json=body)
                    seen.append((model, fault, stream, response.status_code))
                    assert key not in response.text, (model, fault, stream, response.text)
                    assert key[:12] not in response.text, (model, fault, stream, response.text)
                    if response.status_code == 200:  # streamed: the error travels in-band
                        assert stream and '"error"' in response.text, (model, fault, response.text)
                    else:
                        assert response.json()["error"]["code"].startswith(("upstream", "rate_limit")), response.text
    # the upstream text did reach the client, scrubbed: proof the paths were exercised
    assert {status for *_, status in seen} >= {400, 429, 502, 200}
    log = worker.log()
    assert "trying upstream" in log  # every failure was also a logged failover
    for proc in (worker, *stack.procs):
        for key in KEYS.values():
            assert key not in proc.log(), (proc.name, key)
