"""GET /v1/models and GET /v1/models/{id}: live models plus aliases whose target is live.

Each model object is OpenAI's (`id`, `object`, `created`, `owned_by`: the pool) plus what it serves:
`capabilities`, the routes it answers (chat.completions, completions, embeddings, images,
moderations). SDKs ignore fields they do not know."""

from __future__ import annotations

import time

from starlette.types import Receive, Scope, Send

from libs.errors import ModelNotFound
from services.edge.asgi_io import send_error, send_json
from services.edge.state import EdgeState

_CREATED = int(time.time())


# kind -> the capability name a client reads (OpenAI's route names)
_CAPABILITY = {"chat": "chat.completions", "completion": "completions", "embedding": "embeddings",
               "image": "images", "moderation": "moderations"}


def _model_object(model_id: str, owner: str, kinds: tuple[str, ...]) -> dict[str, object]:
    capabilities = [_CAPABILITY[k] for k in kinds if k in _CAPABILITY]
    if "chat" in kinds and "completion" not in kinds:
        capabilities.append("completions")  # the edge answers completions with chat
    return {"id": model_id, "object": "model", "created": _CREATED, "owned_by": owner,
            "capabilities": capabilities}


class ListModels:
    def __init__(self, state: EdgeState) -> None:
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        data = [_model_object(m, owner, kinds) for m, owner, kinds in self.state.routing.listed_models()]
        await send_json(send, 200, {"object": "list", "data": data})


class GetModel:
    def __init__(self, state: EdgeState) -> None:
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        model_id = scope["path_params"]["model"]
        for listed, owner, kinds in self.state.routing.listed_models():
            if listed == model_id:
                await send_json(send, 200, _model_object(listed, owner, kinds))
                return
        await send_error(send, ModelNotFound(model_id))
