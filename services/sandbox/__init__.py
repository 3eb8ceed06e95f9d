"""A deterministic fake OpenAI upstream for tests and benchmarks (`python -m services.sandbox`).

It shares no code with the gateway on purpose: a bug in a shared encoder would hide from the tests.

Routes: GET / and /healthz; GET /v1/models[/ID]; POST /v1/chat/completions and /v1/completions
(stream and non-stream); GET|POST /_sandbox/config (defaults for every request, `{}` resets);
GET /_sandbox/events?mark=ID and DELETE /_sandbox/events (the log of marked requests).

Fault injection is written into the prompt (the last chat message, or the completion prompt), anywhere,
as `[sandbox key=value key=value ...]`; see `directives.py` for the keys. Env (read at start-up):
SANDBOX_HOST, PORT, SANDBOX_API_KEY, SANDBOX_MODELS.
"""
