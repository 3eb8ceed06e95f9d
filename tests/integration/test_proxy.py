"""HTTP_PROXY and NO_PROXY are honoured by openai-worker (libs/openai_upstream/call.py proxy_for).

The workers here point at an upstream whose host does not resolve (`upstream.invalid`, RFC 2606).
With HTTP_PROXY set to the sandbox, which accepts absolute-form request targets as a forward proxy
would, the request reaches the sandbox; with the same host listed in NO_PROXY it goes direct and
cannot reach anything.
"""

from __future__ import annotations

from collections.abc import Callable

import httpx

from libs.devproc import Proc
from tests.conftest import AUTH_KEY, Stack, wait_for_models

AUTH = {"authorization": f"Bearer {AUTH_KEY}"}
UNRESOLVABLE = "http://upstream.invalid/v1"


async def sandbox_events(stack: Stack, mark: str) -> list[dict[str, object]]:
    async with httpx.AsyncClient() as plain:
        return (await plain.get(f"{stack.sandbox_url}/_sandbox/events", params={"mark": mark})).json()["events"]


async def ask(stack: Stack, model: str, mark: str) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": f"hi [sandbox tokens=4 mark={mark}]"}]}
    async with httpx.AsyncClient(base_url=stack.base_url, headers=AUTH, timeout=30) as http:
        return await http.post("/chat/completions", json=body)


async def test_http_proxy_is_used_and_no_proxy_bypasses_it(stack: Stack, start_worker: Callable[..., Proc]) -> None:
    proxied = {"OPENAI_BASE_URL": UNRESOLVABLE, "HTTP_PROXY": stack.sandbox_url}
    start_worker(name="proxy-worker", pool="proxied", models="proxied-model", **proxied)
    start_worker(
        name="proxy-worker-np", pool="proxied-np", models="proxied-np-model", NO_PROXY="upstream.invalid", **proxied
    )
    await wait_for_models(stack, {"proxied-model", "proxied-np-model"})

    # through the proxy: the only way to reach an upstream whose host does not resolve
    response = await ask(stack, "proxied-model", "via-proxy")
    assert response.status_code == 200, response.text
    reply = response.json()
    assert reply["choices"][0]["message"]["content"].strip()
    assert reply["choices"][0]["finish_reason"] == "stop"
    events = await sandbox_events(stack, "via-proxy")
    assert [e["path"] for e in events] == ["/v1/chat/completions"]

    # NO_PROXY names the host: the worker goes direct, fails to connect on every delivery, 502
    response = await ask(stack, "proxied-np-model", "no-proxy")
    assert response.status_code == 502, response.text
    error = response.json()["error"]
    assert error["code"] == "upstream_error" and "cannot reach upstream" in error["message"], error
    assert await sandbox_events(stack, "no-proxy") == []  # the proxy never saw it
