"""`make run`: the whole stack on loopback, in the foreground; Ctrl-C stops every process it started.

- NATS_URL set: use that server; else start nats-server with JetStream on NATS_PORT (4222), its
  data under the state folder.
- OPENAI_BASE_URL or OPENAI_WORKER_CONFIG set: openai-worker forwards there; else the sandbox
  upstream starts and openai-worker points at it, for chat and moderations (sandbox mode, said
  clearly in the log).
- embeddings-worker always runs, with its built-in model (no account, no network), plus the
  upstreams of EMBEDDINGS_BASE_URL / EMBEDDINGS_WORKER_CONFIG if set.
- image-worker runs against IMAGES_BASE_URL / IMAGES_WORKER_CONFIG if set, else against the
  sandbox in sandbox mode; outside sandbox mode with no image upstream it does not start.
- chatgpt-web-worker runs with CHATGPT_ACCESS_TOKENS / CHATGPT_ACCOUNTS_FILE against
  CHATGPT_BASE_URL (default https://chatgpt.com); with none of the three set, against the sandbox's
  fake of the ChatGPT web backend with three fake accounts (sandbox mode, said in the log); with a
  base URL but no account it does not start.
- sydney-worker (Bing Chat) and image-worker's Bing backend (Bing Image Creator) run with
  DEFAULT_COOKIES / SYDNEY_ACCOUNTS_FILE against Bing (or SYDNEY_CREATE_URL, SYDNEY_CHATHUB_URL,
  BING_BASE_URL); with none of those set, against the sandbox's fake of Bing with three fake
  accounts (sandbox mode, said in the log); with URLs but no account they do not start.
- agent-bridge always runs: ChatGPT-API-server's browser agents connect to
  ws://127.0.0.1:AGENT_BRIDGE_PORT/client/register (default 8081) and answer POST /api/ask and the
  AGENT_MODELS (chatgpt-agent). When no ChatGPT account is configured (the ChatGPT sandbox mode),
  two of the sandbox's fake agents connect to it (said in the log).
- The edge listens on PORT (8080).
- State (logs, JetStream data, the lock) lives in SY_STATE_DIR, default `.state/` in the checkout.
  One `make run` per state folder: a second one refuses, naming the first one's pid.

Every process started is stopped on the way out, whether it became ready or not. Each gets only
the environment it needs (`SERVICE_ENV`): AUTH_TOKEN reaches the edge alone, upstream keys the
worker alone, and nats-server neither.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx
import orjson

from libs.devproc import REPO_ROOT, Proc, free_port, spawn, spawn_python_service, start_nats_server
from libs.logs import url_without_credentials
from libs.settings import ConfigError, env_int, env_list

SANDBOX_MODELS = "sandbox-chat,sandbox-fast"
SANDBOX_MODERATION_MODELS = "omni-moderation-latest,text-moderation-latest"
SANDBOX_IMAGE_MODELS = "sandbox-image,stabilityai/stable-diffusion-xl-base-1.0,dall-e-3"
# the sandbox's fake ChatGPT web backend accepts any session cookie `sandbox-session-<user>`
SANDBOX_CHATGPT_USERS = ("alice", "bob", "carol")
# the sandbox's fake Bing signs in any cookie `_U=sandbox-u-<user>`
SANDBOX_BING_USERS = ("dave", "erin", "frank")
_BING_ENV = ("SYDNEY_", "BING_", "DEFAULT_COOKIES")

# upstream clients honour proxies; nothing else does
_PROXY_ENV = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "all_proxy",
              "no_proxy")

# Which of the caller's environment variables each service receives, on top of libs/devproc.py's
# base (PATH, locale, PYTHON*, SY_* tuning, LOG_LEVEL): names, and prefixes ending in "_".
SERVICE_ENV: dict[str, tuple[str, ...]] = {
    "edge": ("AUTH_TOKEN", "AUTH_TOKENS", "ADMIN_KEY", "API_KEY_PREFIX", "ALLOWED_ORIGINS", "NO_LOG", "HOST",
             "EDGE_ID", "SWITCHYARD_CONFIG", "INLINE_BODY_BYTES", "REPLY_BUFFER", "MAX_", "PUBLIC_BASE_URL", "IMAGE_",
             "SYDNEY_UPLOAD_MAX_BYTES", "USAGE_"),
    "openai-worker": ("OPENAI_", "WORKER_", *_PROXY_ENV),
    "embeddings-worker": ("EMBEDDINGS_", "WORKER_", *_PROXY_ENV),
    "image-worker": ("IMAGES_", "WORKER_", *_PROXY_ENV),
    "chatgpt-web-worker": ("CHATGPT_", "GO_CHATGPT_API_PROXY", "WORKER_", *_PROXY_ENV),
    "sydney-worker": (*_BING_ENV, "WORKER_", *_PROXY_ENV),
    "image-worker-bing": (*_BING_ENV, "IMAGES_FETCH_MAX_BYTES", "WORKER_", *_PROXY_ENV),
    "agent-bridge": ("AGENT_MODELS", "WORKER_"),
    "sandbox": ("SANDBOX_",),
    "nats-server": (),  # GOMAXPROCS and GODEBUG are set by start_nats_server
}


def service_env(service: str, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables of `environ` (default: ours) that `service` is given."""
    source = os.environ if environ is None else environ
    wanted = SERVICE_ENV[service]
    names = {w for w in wanted if not w.endswith("_")}
    prefixes = tuple(w for w in wanted if w.endswith("_"))
    return {k: v for k, v in source.items() if k in names or (prefixes and k.startswith(prefixes))}


def state_dir() -> Path:
    return Path(os.environ.get("SY_STATE_DIR") or REPO_ROOT / ".state")


def say(text: str) -> None:
    print(f"[switchyard] {text}", flush=True)


@contextmanager
def exclusive(state: Path) -> Iterator[bool]:
    """Holds `state/devstack.lock` for the run's life (the kernel drops it when we exit, however we
    exit). Yields False when another run holds it, having said so."""
    state.mkdir(parents=True, exist_ok=True)
    path = state / "devstack.lock"
    with open(path, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "unknown"
            say(f"another `make run` (pid {holder}) is running with state in {state}: stop it first, "
                f"or give this one its own SY_STATE_DIR, PORT and NATS_PORT")
            yield False
            return
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        yield True


class LogEcho:
    """Shows a service's warnings and errors on the console as they reach its log (the log has
    everything; the console is where people look)."""

    def __init__(self, proc: Proc) -> None:
        self.proc = proc
        self.offset = proc.log_offset
        self.partial = b""

    def poll(self) -> None:
        try:
            with open(self.proc.log_path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return
        self.offset += len(chunk)
        *lines, self.partial = (self.partial + chunk).split(b"\n")
        for line in lines:
            shown = _notable(line)
            if shown:
                say(f"{self.proc.name}: {shown}")


def _notable(line: bytes) -> str | None:
    """A warning or error in a log line, JSON (our services) or nats-server's own format."""
    if line.startswith(b"{"):
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            return None
        if isinstance(entry, dict) and entry.get("level") in ("warning", "error", "critical"):
            return f"{entry['level']}: {entry.get('msg', '')}"
        return None
    text = line.decode(errors="replace").strip()
    return text if any(tag in text for tag in ("[WRN]", "[ERR]", "[FTL]")) else None


def hint_model(worker_env: Mapping[str, str]) -> str:
    """A model the started worker serves, for the example request."""
    from services.openai_worker.config import load_upstreams  # only once the worker has started

    try:
        return load_upstreams(worker_env)[0].models[0]
    except (ConfigError, IndexError):
        return (env_list("OPENAI_MODELS", worker_env) or ["sandbox-chat"])[0]


def wait_model_listed(
    edge_url: str, model: str, edge_env: Mapping[str, str], cancel: threading.Event, within: float = 15.0,
) -> bool:
    """Until the edge has heard the worker announce `model`, so the example works when shown."""
    keys = [k for k in [edge_env.get("AUTH_TOKEN", "").strip(), *env_list("AUTH_TOKENS", edge_env)] if k]
    headers = {"authorization": f"Bearer {keys[0]}"} if keys else {}
    deadline = time.monotonic() + within
    while time.monotonic() < deadline and not cancel.is_set():
        with contextlib.suppress(httpx.HTTPError, orjson.JSONDecodeError):
            listed = httpx.get(f"{edge_url}/v1/models", headers=headers, timeout=2.0).json()
            if any(m.get("id") == model for m in listed.get("data", [])):
                return True
        cancel.wait(0.05)
    return False


def auth_hint(edge_env: Mapping[str, str]) -> str:
    """The header the example request needs: a reference to the key, never the key."""
    if edge_env.get("AUTH_TOKEN", "").strip():
        return ' -H "Authorization: Bearer $AUTH_TOKEN"'
    if env_list("AUTH_TOKENS", edge_env):
        return " -H 'Authorization: Bearer <one of AUTH_TOKENS>'"
    return ""


def main() -> int:
    state = state_dir()
    with exclusive(state) as ours:
        if not ours:
            return 1
        return run(state)


def run(state: Path) -> int:
    logs = state / "logs"
    procs: list[Proc] = []
    echoes: list[LogEcho] = []
    stopping = threading.Event()

    def started(proc: Proc) -> None:  # stopped on the way out, ready or not
        procs.append(proc)
        echoes.append(LogEcho(proc))

    def stop(*_: object) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    status = 0
    try:
        nats_url = os.environ.get("NATS_URL", "")
        if not nats_url:
            nats_port = env_int("NATS_PORT", 4222, minimum=0)
            nats = start_nats_server(log_dir=logs, store_dir=state / "jetstream", port=nats_port,
                                     on_spawn=started, cancel=stopping)
            nats_url = nats.url
            say(f"nats-server (JetStream) at {nats_url}, pid {nats.pid}")
        else:
            say(f"using NATS at {url_without_credentials(nats_url)}")
        worker_env = {**service_env("openai-worker"), "NATS_URL": nats_url, "PORT": str(free_port())}
        # no load balancer in front of a local stack: Ctrl-C need not wait out a readiness grace
        edge_env = {**service_env("edge"), "NATS_URL": nats_url, "PORT": os.environ.get("PORT", "8080"),
                    "SY_TIMEOUT_READINESS_GRACE": os.environ.get("SY_TIMEOUT_READINESS_GRACE", "0.1")}
        embeddings_env = {**service_env("embeddings-worker"), "NATS_URL": nats_url, "PORT": str(free_port())}
        images_env: dict[str, str] | None = None
        if os.environ.get("IMAGES_BASE_URL") or os.environ.get("IMAGES_WORKER_CONFIG"):
            images_env = {**service_env("image-worker"), "NATS_URL": nats_url, "PORT": str(free_port())}
        chatgpt_env: dict[str, str] | None = {**service_env("chatgpt-web-worker"), "NATS_URL": nats_url,
                                              "PORT": str(free_port())}
        chatgpt_sandbox = not any(os.environ.get(v) for v in
                                  ("CHATGPT_BASE_URL", "CHATGPT_ACCESS_TOKENS", "CHATGPT_ACCOUNTS_FILE"))
        if not chatgpt_sandbox and not (os.environ.get("CHATGPT_ACCESS_TOKENS")
                                        or os.environ.get("CHATGPT_ACCOUNTS_FILE")):
            say("chatgpt-web-worker not started: CHATGPT_BASE_URL is set but no account "
                "(CHATGPT_ACCESS_TOKENS or CHATGPT_ACCOUNTS_FILE)")
            chatgpt_env = None
        bing_envs: list[dict[str, str]] | None = [
            {**service_env("sydney-worker"), "NATS_URL": nats_url, "PORT": str(free_port())},
            {**service_env("image-worker-bing"), "NATS_URL": nats_url, "PORT": str(free_port()),
             "IMAGES_BACKEND": "bing"}]
        bing_sandbox = not any(os.environ.get(v) for v in ("DEFAULT_COOKIES", "SYDNEY_ACCOUNTS_FILE",
                                                           "SYDNEY_CREATE_URL", "SYDNEY_CHATHUB_URL", "BING_BASE_URL"))
        if not bing_sandbox and not (os.environ.get("DEFAULT_COOKIES") or os.environ.get("SYDNEY_ACCOUNTS_FILE")):
            say("sydney-worker and image-worker (Bing) not started: a Bing URL is set but no account "
                "(DEFAULT_COOKIES or SYDNEY_ACCOUNTS_FILE)")
            bing_envs = None
        openai_sandbox = not (os.environ.get("OPENAI_BASE_URL") or os.environ.get("OPENAI_WORKER_CONFIG"))
        sandbox_site = ""
        if openai_sandbox or (chatgpt_sandbox and chatgpt_env is not None) or (bing_sandbox and bing_envs):
            port = free_port()
            spawn_python_service(
                "sandbox", "services.sandbox", env={**service_env("sandbox"), "PORT": str(port)}, log_dir=logs,
                health_url=f"http://127.0.0.1:{port}/healthz", on_spawn=started, cancel=stopping,
            )
            sandbox_site = f"http://127.0.0.1:{port}"
        if chatgpt_sandbox and chatgpt_env is not None:
            accounts = state / "chatgpt-sandbox-accounts.toml"
            accounts.write_text("".join(f'[[accounts]]\nname = "{user}"\nsession_token = "sandbox-session-{user}"\n\n'
                                        for user in SANDBOX_CHATGPT_USERS))
            chatgpt_env.update(CHATGPT_BASE_URL=sandbox_site, CHATGPT_ACCOUNTS_FILE=str(accounts))
            say(f"SANDBOX MODE (ChatGPT web): no CHATGPT_* account configured; chatgpt-web-worker answers from "
                f"the sandbox's fake ChatGPT web backend at {sandbox_site} with accounts "
                f"{', '.join(SANDBOX_CHATGPT_USERS)}")
        if bing_sandbox and bing_envs:
            accounts = state / "bing-sandbox-accounts.toml"
            accounts.write_text("".join(f'[[accounts]]\nname = "{user}"\ncookies = "_U=sandbox-u-{user}"\n\n'
                                        for user in SANDBOX_BING_USERS))
            ws_site = "ws" + sandbox_site.removeprefix("http")
            for env in bing_envs:
                env.update(SYDNEY_CREATE_URL=f"{sandbox_site}/edgesvc/turing/conversation/create",
                           SYDNEY_CHATHUB_URL=f"{ws_site}/sydney/ChatHub", BING_BASE_URL=sandbox_site,
                           SYDNEY_ACCOUNTS_FILE=str(accounts))
            say(f"SANDBOX MODE (Bing): no Bing account configured (DEFAULT_COOKIES, SYDNEY_ACCOUNTS_FILE); "
                f"sydney-worker and image-worker's Bing backend answer from the sandbox's fake Bing at "
                f"{sandbox_site} with accounts {', '.join(SANDBOX_BING_USERS)}")
        if openai_sandbox:
            port = int(sandbox_site.rsplit(":", 1)[1])
            sandbox = f"{sandbox_site}/v1"
            worker_env.update(OPENAI_BASE_URL=sandbox, OPENAI_API_KEY="sandbox", OPENAI_MODELS=SANDBOX_MODELS,
                              OPENAI_MODERATION_MODELS=SANDBOX_MODERATION_MODELS)
            if images_env is None:
                images_env = {**service_env("image-worker"), "NATS_URL": nats_url, "PORT": str(free_port()),
                              "IMAGES_BASE_URL": sandbox, "IMAGES_API_KEY": "sandbox",
                              "IMAGES_MODELS": SANDBOX_IMAGE_MODELS}
            edge_env.setdefault("SY_ROUTES", "sandbox-*=openai")
            say(f"SANDBOX MODE: no upstream configured (OPENAI_BASE_URL), answering from the local fake "
                f"upstream at http://127.0.0.1:{port} with models {SANDBOX_MODELS} (chat), "
                f"{SANDBOX_MODERATION_MODELS} (moderations) and {SANDBOX_IMAGE_MODELS} (images)")
        workers = [("openai-worker", "services.openai_worker", worker_env),
                   ("embeddings-worker", "services.embeddings_worker", embeddings_env)]
        if images_env is not None:
            workers.append(("image-worker", "services.image_worker", images_env))
        else:
            say("image-worker not started: no image upstream configured (IMAGES_BASE_URL or IMAGES_WORKER_CONFIG)")
        if chatgpt_env is not None:
            workers.append(("chatgpt-web-worker", "services.chatgpt_web_worker", chatgpt_env))
        bridge_env = {**service_env("agent-bridge"), "NATS_URL": nats_url,
                      "PORT": os.environ.get("AGENT_BRIDGE_PORT", "8081")}
        workers.append(("agent-bridge", "services.agent_bridge", bridge_env))
        if bing_envs:
            workers.append(("sydney-worker", "services.sydney_worker", bing_envs[0]))
            workers.append(("image-worker-bing", "services.image_worker", bing_envs[1]))
        # the edge first: it makes the work queue, and a worker is ready once it pulls from it
        spawn_python_service(
            "edge", "services.edge", env=edge_env, log_dir=logs,
            health_url=f"http://127.0.0.1:{edge_env['PORT']}/readyz", on_spawn=started, cancel=stopping,
        )
        for name, module, env in workers:
            worker = spawn_python_service(
                name, module, env=env, log_dir=logs,
                health_url=f"http://127.0.0.1:{env['PORT']}/readyz", on_spawn=started, cancel=stopping,
            )
            say(f"{name} pid {worker.pid} (metrics http://127.0.0.1:{env['PORT']}/metrics)")
        if chatgpt_sandbox:
            agent_url = f"ws://127.0.0.1:{bridge_env['PORT']}/client/register"
            fakes = spawn("sandbox-agents", [sys.executable, "-m", "services.sandbox.agent", "--server", agent_url,
                                             "--name", "sandbox-agent", "--count", "2", "--reconnect-ms", "1000"],
                          log_dir=logs)
            started(fakes)
            say(f"SANDBOX MODE (agents): two fake browser agents (pid {fakes.pid}) connected to {agent_url}")
        model = hint_model(worker_env)
        if not wait_model_listed(f"http://127.0.0.1:{edge_env['PORT']}", model, edge_env, stopping):
            say(f"warning: the edge does not list {model} yet (check SY_ROUTES and the worker's log)")
        echo(echoes)
        say(f"edge ready: http://127.0.0.1:{edge_env['PORT']}/v1 (logs in {logs})")
        example = orjson.dumps({"model": model,
                                "messages": [{"role": "user", "content": "hello"}]}).decode()
        say(f"try: curl http://127.0.0.1:{edge_env['PORT']}/v1/chat/completions "
            f"-H 'content-type: application/json'{auth_hint(edge_env)} -d '{example}'")
        embedding = orjson.dumps({"model": "all-MiniLM-L6-v2", "input": "a cat sits on the mat"}).decode()
        say(f"     curl http://127.0.0.1:{edge_env['PORT']}/v1/embeddings "
            f"-H 'content-type: application/json'{auth_hint(edge_env)} -d '{embedding}'")
        if chatgpt_env is not None:
            web = orjson.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]}).decode()
            say(f"     curl http://127.0.0.1:{edge_env['PORT']}/v1/chat/completions "
                f"-H 'content-type: application/json'{auth_hint(edge_env)} -d '{web}'   (ChatGPT web accounts)")
        say(f"     curl http://127.0.0.1:{edge_env['PORT']}/api/ask{auth_hint(edge_env)} "
            f"-d '{{\"content\":\"hello\"}}'   (ChatGPT-API-server's route: the browser agents)")
        if bing_envs:
            say(f"     curl -N http://127.0.0.1:{edge_env['PORT']}/chat/stream -H 'content-type: application/json'"
                f"{auth_hint(edge_env)} -d '{{\"prompt\":\"hello\"}}'   (Bing Chat, SydneyQt's API)")
        say("Ctrl-C stops everything")
        while not stopping.wait(0.2):
            echo(echoes)
            for proc in procs:
                if not proc.alive():
                    say(f"{proc.name} exited with {proc.popen.returncode}; see {proc.log_path}")
                    status = 1
                    stopping.set()
    except RuntimeError as exc:
        echo(echoes)
        if not stopping.is_set():  # the first line says what; the service's own errors are echoed above
            say(f"could not start: {str(exc).splitlines()[0].rstrip(':')} (logs in {logs})")
            status = 1
    except ConfigError as exc:
        say(f"configuration error: {exc}")
        status = 2
    finally:
        # the edge first (no new requests; open ones end by the contract), then the workers it
        # started before it, in reverse, so each drains with its upstream and the bus still there
        for proc in sorted(reversed(procs), key=lambda p: p.name != "edge"):
            proc.stop()
            say(f"stopped {proc.name} (pid {proc.pid})")
        echo(echoes)
    return status


def echo(echoes: list[LogEcho]) -> None:
    for e in echoes:
        e.poll()


if __name__ == "__main__":
    sys.exit(main())
