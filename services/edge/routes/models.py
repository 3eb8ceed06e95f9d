"""GET /v1/models and GET /v1/models/{id}: live models plus aliases whose target is live."""

from __future__ import annotations

import time

from starlette.types import Receive, Scope, Send

from libs.errors import ModelNotFound
from services.edge.asgi_io import send_error, send_json
from services.edge.state import EdgeState

_CREATED = int(time.time())


def _model_object(model_id: str, owner: str) -> dict[str, object]:
    return {"id": model_id, "object": "model", "created": _CREATED, "owned_by": owner}


class ListModels:
    def __init__(self, state: EdgeState) -> None:
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        data = [_model_object(m, owner) for m, owner in self.state.routing.listed_models()]
        await send_json(send, 200, {"object": "list", "data": data})


class GetModel:
    def __init__(self, state: EdgeState) -> None:
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        model_id = scope["path_params"]["model"]
        for listed, owner in self.state.routing.listed_models():
            if listed == model_id:
                await send_json(send, 200, _model_object(listed, owner))
                return
        await send_error(send, ModelNotFound(model_id))
