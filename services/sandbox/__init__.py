"""A deterministic fake OpenAI upstream for tests and benchmarks (`python -m services.sandbox`).

It shares no code with the gateway on purpose: a bug in a shared encoder would hide from the tests.

Routes: GET / and /healthz; GET /v1/models[/ID]; POST /v1/chat/completions and /v1/completions
(stream and non-stream); POST /v1/embeddings, /v1/images/generations, /v1/moderations; GET
/_sandbox/images/ID.png (the images of `url` answers); GET|POST /_sandbox/config (defaults for every
request, `{}` resets); GET /_sandbox/events?mark=ID and DELETE /_sandbox/events (the log of marked requests).

Fault injection is written into the prompt (the last chat message, the completion prompt, the embedding
or moderation input, the image prompt), anywhere, as `[sandbox key=value key=value ...]`; see
`directives.py` for the keys. Env (read at start-up): SANDBOX_HOST, PORT, SANDBOX_API_KEY, SANDBOX_MODELS
(chat: any model name is answered), SANDBOX_EMBEDDING_MODELS (`name` or `name=DIM`),
SANDBOX_IMAGE_MODELS, SANDBOX_MODERATION_MODELS (these three are checked: 404 model_not_found).
"""
