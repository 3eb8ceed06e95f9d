"""`make run`: the whole stack on loopback, in the foreground; Ctrl-C stops every process it started.

- NATS_URL set: use that server; else start nats-server with JetStream (data under .state/).
- OPENAI_BASE_URL or OPENAI_WORKER_CONFIG set: openai-worker forwards there; else the sandbox
  upstream starts and openai-worker points at it (sandbox mode, said clearly in the log).
"""

from __future__ import annotations

import os
import signal
import sys
import time

from libs.devproc import REPO_ROOT, Proc, free_port, spawn_python_service, start_nats_server

STATE = REPO_ROOT / ".state"
SANDBOX_MODELS = "sandbox-chat,sandbox-fast"


def say(text: str) -> None:
    print(f"[switchyard] {text}", flush=True)


def main() -> int:
    logs = STATE / "logs"
    procs: list[Proc] = []
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        nats_url = os.environ.get("NATS_URL", "")
        if not nats_url:
            nats_port = int(os.environ.get("NATS_PORT", "4222"))
            nats = start_nats_server(log_dir=logs, store_dir=STATE / "jetstream", port=nats_port)
            procs.append(nats)
            nats_url = nats.url
            say(f"nats-server (JetStream) at {nats_url}, pid {nats.pid}")
        else:
            say(f"using NATS at {nats_url}")
        worker_env = {"NATS_URL": nats_url, "PORT": str(free_port())}
        # no load balancer in front of a local stack: Ctrl-C need not wait out a readiness grace
        edge_env = {"NATS_URL": nats_url, "PORT": os.environ.get("PORT", "8080"),
                    "SY_TIMEOUT_READINESS_GRACE": os.environ.get("SY_TIMEOUT_READINESS_GRACE", "0.1")}
        if not (os.environ.get("OPENAI_BASE_URL") or os.environ.get("OPENAI_WORKER_CONFIG")):
            port = free_port()
            sandbox = spawn_python_service(
                "sandbox", "services.sandbox", env={"PORT": str(port)}, log_dir=logs,
                health_url=f"http://127.0.0.1:{port}/healthz",
            )
            procs.append(sandbox)
            worker_env.update(OPENAI_BASE_URL=f"http://127.0.0.1:{port}/v1", OPENAI_API_KEY="sandbox",
                              OPENAI_MODELS=SANDBOX_MODELS)
            edge_env.setdefault("SY_ROUTES", "sandbox-*=openai")
            say(f"SANDBOX MODE: no upstream configured (OPENAI_BASE_URL), answering from the local fake "
                f"upstream at http://127.0.0.1:{port} with models {SANDBOX_MODELS}")
        worker = spawn_python_service(
            "openai-worker", "services.openai_worker", env=worker_env, log_dir=logs,
            health_url=f"http://127.0.0.1:{worker_env['PORT']}/readyz",
        )
        procs.append(worker)
        say(f"openai-worker pid {worker.pid} (metrics http://127.0.0.1:{worker_env['PORT']}/metrics)")
        edge = spawn_python_service(
            "edge", "services.edge", env=edge_env, log_dir=logs,
            health_url=f"http://127.0.0.1:{edge_env['PORT']}/readyz",
        )
        procs.append(edge)
        say(f"edge ready: http://127.0.0.1:{edge_env['PORT']}/v1 (logs in {logs.relative_to(REPO_ROOT)})")
        example = '{"model":"sandbox-chat","messages":[{"role":"user","content":"hello"}]}'
        say(f"try: curl http://127.0.0.1:{edge_env['PORT']}/v1/chat/completions "
            f"-H 'content-type: application/json' -d '{example}'")
        say("Ctrl-C stops everything")
        while not stopping:
            for proc in procs:
                if not proc.alive():
                    say(f"{proc.name} exited with {proc.popen.returncode}; see {proc.log_path}")
                    stopping = True
            time.sleep(0.2)
    except RuntimeError as exc:
        say(f"could not start: {exc}")
        return 1
    finally:
        for proc in reversed(procs):
            proc.stop()
            say(f"stopped {proc.name} (pid {proc.pid})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
