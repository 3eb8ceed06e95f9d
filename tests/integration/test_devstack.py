"""`make run` (tools/devstack.py) as a user runs it: a subprocess on free ports with a state folder
of its own (SY_STATE_DIR), stopped with Ctrl-C (SIGINT). What it must do: stop every process it
started, ready or not; refuse a second run on the same state; give each child only its own
secrets; say something useful on the console.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from libs.devproc import REPO_ROOT, Proc, free_port
from tests.conftest import SANDBOX_KEY

SECRET = "sy-devstack-secret-0123456789"
READY_LINE = "Ctrl-C stops everything"


class Devstack:
    """`python -m tools.devstack` with its console collected line by line."""

    def __init__(self, env: dict[str, str]) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "tools.devstack"], cwd=REPO_ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.lines: list[str] = []
        self.children: set[int] = set()
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def console(self) -> str:
        return "\n".join(self.lines)

    def wait_line(self, text: str, within: float) -> None:
        deadline = time.monotonic() + within
        with self._changed:
            while not any(text in line for line in self.lines):
                left = deadline - time.monotonic()
                assert left > 0 and self.popen.poll() is None, f"no {text!r} on the console:\n{self.console}"
                self._changed.wait(min(left, 0.5))

    def note_children(self) -> set[int]:
        """Its child processes now (every one it spawned, in a session of its own, is its child)."""
        self.children |= children_of(self.popen.pid)
        return self.children

    def wait_exit(self, within: float) -> int:
        """Its exit status, noting children until then (a failed start may spawn and stop quickly)."""
        deadline = time.monotonic() + within
        while self.popen.poll() is None:
            assert time.monotonic() < deadline, f"devstack still running after {within}s:\n{self.console}"
            self.note_children()
            time.sleep(0.02)
        return self.popen.returncode

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)
            try:
                self.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)
        self._reader.join(timeout=10)
        assert self.popen.stdout is not None
        self.popen.stdout.close()
        for pid in self.children:  # never leave a stray behind, whatever the test found
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def children_of(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """Running, and not a zombie waiting for its parent."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    return dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)


def cmdline_of(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")


def devstack_env(state: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("NATS_URL", "OPENAI_BASE_URL", "OPENAI_WORKER_CONFIG", "AUTH_TOKEN", "AUTH_TOKENS")}
    env.update(SY_STATE_DIR=str(state), PORT=str(free_port()), NATS_PORT=str(free_port()), SY_TIME_SCALE="0.1",
               AGENT_BRIDGE_PORT=str(free_port()))
    env.update(extra)
    return env


@pytest.fixture
def devstacks() -> Iterator[list[Devstack]]:
    started: list[Devstack] = []
    yield started
    for stack in started:
        stack.kill()


def test_each_child_gets_its_own_secrets_and_sigint_stops_them_all(
    tmp_path: Path, sandbox: Proc, devstacks: list[Devstack]
) -> None:
    env = devstack_env(tmp_path / "state", AUTH_TOKEN=SECRET, OPENAI_BASE_URL=sandbox.url + "/v1",
                       OPENAI_API_KEY=SANDBOX_KEY, OPENAI_MODELS="sandbox-fast,sandbox-chat",
                       IMAGES_BASE_URL=sandbox.url + "/v1", IMAGES_API_KEY=SANDBOX_KEY, IMAGES_MODELS="sandbox-image")
    stack = Devstack(env)
    devstacks.append(stack)
    stack.wait_line(READY_LINE, within=60)
    children = stack.note_children()
    by_role = {}
    for pid in children:
        role = "nats-server" if "nats-server" in cmdline_of(pid) else cmdline_of(pid).split()[-1]
        if "services.sandbox.agent" in cmdline_of(pid):
            role = "services.sandbox.agent"
        if role == "services.image_worker" and environ_of(pid).get("IMAGES_BACKEND") == "bing":
            role = "services.image_worker (bing)"
        by_role[role] = pid
    # no ChatGPT or Bing account configured: their workers run against the sandbox's fakes of them
    assert set(by_role) == {"nats-server", "services.openai_worker", "services.embeddings_worker",
                            "services.image_worker", "services.edge", "services.sandbox",
                            "services.chatgpt_web_worker", "services.sydney_worker",
                            "services.image_worker (bing)", "services.agent_bridge", "services.sandbox.agent"}, by_role
    assert len(children) == len(by_role)
    assert any("SANDBOX MODE (ChatGPT web)" in line for line in stack.lines)
    assert any("SANDBOX MODE (Bing)" in line for line in stack.lines)
    environs = {role: environ_of(pid) for role, pid in by_role.items()}
    assert environs["services.edge"].get("AUTH_TOKEN") == SECRET
    assert environs["services.openai_worker"].get("OPENAI_API_KEY") == SANDBOX_KEY
    assert environs["services.image_worker"].get("IMAGES_API_KEY") == SANDBOX_KEY
    for role, environ in environs.items():
        if role != "services.edge":
            assert SECRET not in environ.values(), role
        if role not in ("services.openai_worker", "services.image_worker"):  # each holds only its own prefix's
            assert SANDBOX_KEY not in environ.values(), role
    assert not any(k.startswith("IMAGES_") for k in environs["services.openai_worker"])
    assert not any(k.startswith("OPENAI_") for k in environs["services.image_worker"])

    # the hint names a served model and the header, never the key; and the request it shows works
    hint = next(line for line in stack.lines if "try: curl" in line)
    assert '"model":"sandbox-fast"' in hint
    assert '-H "Authorization: Bearer $AUTH_TOKEN"' in hint
    assert SECRET not in stack.console
    reply = httpx.post(f"http://127.0.0.1:{env['PORT']}/v1/chat/completions", timeout=30,
                       headers={"authorization": f"Bearer {SECRET}"},
                       json={"model": "sandbox-fast", "messages": [{"role": "user", "content": "hello"}]})
    assert reply.status_code == 200, reply.text
    # the built-in embeddings model answers with no account configured
    embedded = httpx.post(f"http://127.0.0.1:{env['PORT']}/v1/embeddings", timeout=30,
                          headers={"authorization": f"Bearer {SECRET}"},
                          json={"model": "all-MiniLM-L6-v2", "input": "a cat sits on the mat"})
    assert embedded.status_code == 200 and len(embedded.json()["data"][0]["embedding"]) == 384
    # and a ChatGPT web model, on the sandbox's fake accounts
    web = httpx.post(f"http://127.0.0.1:{env['PORT']}/v1/chat/completions", timeout=30,
                     headers={"authorization": f"Bearer {SECRET}"},
                     json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]})
    assert web.status_code == 200 and web.json()["model"] == "gpt-4o", web.text
    assert not any(k.startswith(("OPENAI_", "IMAGES_")) for k in environs["services.chatgpt_web_worker"])
    # and Bing Chat, through SydneyQt's own route, on the sandbox's fake Bing accounts
    with httpx.stream("POST", f"http://127.0.0.1:{env['PORT']}/chat/stream", timeout=30,
                      headers={"authorization": f"Bearer {SECRET}"}, json={"prompt": "hello"}) as bing:
        assert bing.status_code == 200, bing.read()
        assert "event: message" in bing.read().decode()
    for role in ("services.sydney_worker", "services.image_worker (bing)"):
        assert not any(k.startswith(("OPENAI_", "CHATGPT_", "IMAGES_API")) for k in environs[role]), role

    # and ChatGPT-API-server's /api/ask, answered by one of the sandbox's fake browser agents
    assert any("SANDBOX MODE (agents)" in line for line in stack.lines)
    for _ in range(100):  # the fake agents connect once the bridge is up: bounded wait
        asked = httpx.post(f"http://127.0.0.1:{env['PORT']}/api/ask", timeout=30,
                           headers={"authorization": SECRET}, json={"content": "hello"})
        if asked.status_code != 503:
            break
        time.sleep(0.1)
    assert asked.status_code == 200 and asked.json()["content"].startswith("sandbox-agent-"), asked.text
    assert not any(k.startswith(("OPENAI_", "CHATGPT_", "IMAGES_")) for k in environs["services.agent_bridge"])

    # a second run on the same state refuses, naming the first, and touches nothing of it (the
    # running services may still write, e.g. the access line of the request above: never less)
    logs = tmp_path / "state" / "logs"
    sizes = {path.name: path.stat().st_size for path in logs.iterdir()}
    nats_log = (logs / "nats-server.log").read_bytes()
    second = subprocess.run([sys.executable, "-m", "tools.devstack"], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=30, env={**env, "PORT": str(free_port()), "NATS_PORT": str(free_port())})
    assert second.returncode != 0
    assert f"pid {stack.popen.pid}" in second.stdout, second.stdout
    after = {path.name: path.stat().st_size for path in logs.iterdir()}
    assert set(after) == set(sizes) and all(after[name] >= size for name, size in sizes.items()), (sizes, after)
    assert (logs / "nats-server.log").read_bytes() == nats_log  # no second nats-server wrote there
    assert all(alive(pid) for pid in children)

    stack.popen.send_signal(signal.SIGINT)
    assert stack.wait_exit(within=40) == 0, stack.console
    assert not [pid for pid in children if alive(pid)], stack.console

    # every line our services wrote is JSON with an ISO-8601 timestamp; the logs outlive the run
    for name in ("edge.log", "openai-worker.log"):
        for line in (logs / name).read_text().splitlines():
            assert orjson.loads(line)["ts"].endswith("Z"), line


def test_a_failed_start_stops_every_process_it_started(tmp_path: Path, devstacks: list[Devstack]) -> None:
    stack = Devstack(devstack_env(tmp_path / "state", NATS_URL="nats://someone:hunter22@127.0.0.1:1"))
    devstacks.append(stack)
    started = time.monotonic()
    assert stack.wait_exit(within=45) != 0, stack.console
    assert time.monotonic() - started < 30
    assert "nats://127.0.0.1:1" in stack.console
    assert "hunter22" not in stack.console
    assert stack.children, "the sandbox and the worker were started"
    assert not [pid for pid in stack.children if alive(pid)], stack.console


def test_open_mode_is_said_on_the_console(tmp_path: Path, devstacks: list[Devstack]) -> None:
    env = devstack_env(tmp_path / "state")
    stack = Devstack(env)
    devstacks.append(stack)
    stack.wait_line(READY_LINE, within=60)
    stack.wait_line("AUTH_TOKEN is not set", within=10)
    hint = next(line for line in stack.lines if "try: curl" in line)
    assert '"model":"sandbox-chat"' in hint and "Authorization" not in hint
    stack.note_children()
    stack.popen.send_signal(signal.SIGINT)
    assert stack.wait_exit(within=40) == 0, stack.console
    assert not [pid for pid in stack.children if alive(pid)], stack.console

    # a second run appends to the logs: the first run's lines are still there
    first_run = (tmp_path / "state" / "logs" / "edge.log").read_text()
    again = Devstack({**env, "PORT": str(free_port()), "NATS_PORT": str(free_port())})
    devstacks.append(again)
    again.wait_line(READY_LINE, within=60)
    assert (tmp_path / "state" / "logs" / "edge.log").read_text().startswith(first_run)
