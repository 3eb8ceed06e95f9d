"""The edge's OpenAPI 3.1 document: every public route, its body schemas generated from validation.py.

A request body's schema is `validation.body_schema(kind)`: walked from the very field table the
edge validates that body with, so the document cannot drift from what the edge accepts (a field
added to a table appears here; tests/unit/test_openapi.py checks both ways). Responses are
concise: OpenAI's shapes, with the fields clients read, and one error schema for every failure.
"""

from __future__ import annotations

import copy
import importlib.metadata
from typing import Any

import proto
from services.edge.validation import body_schema
from services.edge.validation_chatgpt import CHATGPT_BODIES, MAX_LIMIT, chatgpt_body_schema
from services.edge.validation_sydney import MAX_COOKIES, SYDNEY_BODIES, sydney_body_schema

Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Schema) -> Schema:
    return {"application/json": {"schema": schema}}


_NULLABLE_STRING: Schema = {"type": ["string", "null"]}
_USAGE: Schema = {
    "type": "object",
    "required": ["prompt_tokens", "total_tokens"],
    "properties": {"prompt_tokens": {"type": "integer"}, "completion_tokens": {"type": "integer"},
                   "total_tokens": {"type": "integer"}},
}

_ERROR: Schema = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {
        "type": "object",
        "required": ["message", "type", "param", "code"],
        "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                       "param": {**_NULLABLE_STRING, "description": "the request field at fault, as a path"},
                       "code": _NULLABLE_STRING},
    }},
}

# the success bodies, OpenAI's shapes with the fields clients read
_RESPONSES: dict[str, Schema] = {
    "ChatCompletion": {
        "type": "object",
        "required": ["id", "object", "created", "model", "choices"],
        "properties": {
            "id": {"type": "string"}, "object": {"const": "chat.completion"}, "created": {"type": "integer"},
            "model": {"type": "string"},
            "choices": {"type": "array", "items": {
                "type": "object",
                "required": ["index", "message", "finish_reason"],
                "properties": {
                    "index": {"type": "integer"},
                    "message": {"type": "object", "required": ["role"], "properties": {
                        "role": {"const": "assistant"}, "content": _NULLABLE_STRING,
                        "refusal": _NULLABLE_STRING, "tool_calls": {"type": "array", "items": {"type": "object"}},
                    }},
                    "finish_reason": _NULLABLE_STRING,
                    "logprobs": {"type": ["object", "null"]},
                },
            }},
            "usage": _USAGE,
        },
    },
    "ChatCompletionChunk": {
        "type": "object",
        "description": "One `data:` event of a streamed chat completion; the stream ends with `data: [DONE]`.",
        "required": ["id", "object", "created", "model", "choices"],
        "properties": {
            "id": {"type": "string"}, "object": {"const": "chat.completion.chunk"}, "created": {"type": "integer"},
            "model": {"type": "string"},
            "choices": {"type": "array", "items": {"type": "object", "required": ["index", "delta"], "properties": {
                "index": {"type": "integer"}, "delta": {"type": "object"}, "finish_reason": _NULLABLE_STRING,
            }}},
            "usage": {"anyOf": [_USAGE, {"type": "null"}]},
        },
    },
    "Completion": {
        "type": "object",
        "required": ["id", "object", "created", "model", "choices"],
        "properties": {
            "id": {"type": "string"}, "object": {"const": "text_completion"}, "created": {"type": "integer"},
            "model": {"type": "string"},
            "choices": {"type": "array", "items": {"type": "object", "required": ["index", "text"], "properties": {
                "index": {"type": "integer"}, "text": {"type": "string"}, "finish_reason": _NULLABLE_STRING,
                "logprobs": {"type": ["object", "null"]},
            }}},
            "usage": _USAGE,
        },
    },
    "EmbeddingList": {
        "type": "object",
        "required": ["object", "data", "model", "usage"],
        "properties": {
            "object": {"const": "list"},
            "data": {"type": "array", "items": {"type": "object", "required": ["object", "index", "embedding"],
                                                "properties": {
                "object": {"const": "embedding"}, "index": {"type": "integer"},
                "embedding": {"oneOf": [
                    {"type": "array", "items": {"type": "number"}},
                    {"type": "string", "description": "encoding_format base64: little-endian float32, base64"},
                ]},
            }}},
            "model": {"type": "string"},
            "usage": _USAGE,
        },
    },
    "ImagesResponse": {
        "type": "object",
        "required": ["created", "data"],
        "properties": {
            "created": {"type": "integer"},
            "data": {"type": "array", "items": {"type": "object", "properties": {
                "url": {"type": "string", "description": "the upstream's, or this gateway's /images/{name} until "
                                                          "the image expires"},
                "b64_json": {"type": "string"},
                "revised_prompt": {"type": "string"},
            }}},
        },
    },
    "ModerationResponse": {
        "type": "object",
        "required": ["id", "model", "results"],
        "properties": {
            "id": {"type": "string"}, "model": {"type": "string"},
            "results": {"type": "array", "items": {
                "type": "object",
                "required": ["flagged", "categories", "category_scores"],
                "properties": {
                    "flagged": {"type": "boolean"},
                    "categories": {"type": "object", "additionalProperties": {"type": "boolean"}},
                    "category_scores": {"type": "object", "additionalProperties": {"type": "number"}},
                    "category_applied_input_types": {"type": "object"},
                },
            }},
        },
    },
    "Model": {
        "type": "object",
        "required": ["id", "object", "created", "owned_by"],
        "properties": {
            "id": {"type": "string"}, "object": {"const": "model"}, "created": {"type": "integer"},
            "owned_by": {"type": "string", "description": "the worker pool serving it"},
            "capabilities": {"type": "array", "items": {
                "enum": ["chat.completions", "completions", "embeddings", "images", "moderations"]}},
        },
    },
    "ModelList": {
        "type": "object",
        "required": ["object", "data"],
        "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": _ref("Model")}},
    },
}

_RETRY_AFTER = {
    "retry-after": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}},
    "retry-after-ms": {"description": "the same, in milliseconds", "schema": {"type": "integer"}},
}

# status -> what it means at this gateway (libs/errors.py is the one table from errors to statuses)
_ERRORS: dict[str, tuple[str, bool]] = {
    "400": ("Invalid request: `param` names the field at fault (invalid_value, invalid_type, "
            "missing_required_parameter, ...), or the upstream rejected it (upstream_bad_request).", False),
    "401": ("Missing or invalid API key (invalid_api_key).", False),
    "404": ("Unknown model (model_not_found) or URL (not_found).", False),
    "413": ("The request body exceeds MAX_BODY_BYTES, or SYDNEY_UPLOAD_MAX_BYTES for /image/upload "
            "(request_too_large).", False),
    "429": ("The upstream is rate limited (rate_limit_exceeded).", True),
    "502": ("A worker or the upstream failed (worker_lost, reply_gap, upstream_error, ...).", False),
    "503": ("No capacity, the bus is unavailable, the client reads too slowly, the edge is shutting down, or no "
            "chatgpt-web-worker (go-chatgpt-api's routes), sydney-worker or image-worker Bing backend (SydneyQt's "
            "routes) is running (no_capacity, bus_unavailable, "
            "client_too_slow, shutting_down, no_worker).", True),
    "504": ("The request ran out of time (timeout, upstream_timeout).", False),
}


def _error_response(description: str, retry_after: bool) -> Schema:
    response: Schema = {"description": description, "content": _json(_ref("Error"))}
    if retry_after:
        response["headers"] = _RETRY_AFTER
    return response


def _errors(*statuses: str) -> dict[str, Schema]:
    return {status: {"$ref": f"#/components/responses/Error{status}"} for status in statuses}


_JOB_ERRORS = ("400", "401", "404", "413", "429", "502", "503", "504")
_OPEN: list[Schema] = []  # no security requirement: the route is served without a key
_TEXT = {"text/plain": {"schema": {"type": "string"}}}


def _post(operation_id: str, summary: str, request: str, response: Schema) -> Schema:
    return {"post": {
        "operationId": operation_id,
        "summary": summary,
        "requestBody": {"required": True, "content": _json(_ref(request))},
        "responses": {"200": response, **_errors(*_JOB_ERRORS)},
    }}


def _get(operation_id: str, summary: str, responses: dict[str, Schema], *, open_route: bool = False,
         parameters: list[Schema] | None = None) -> Schema:
    operation: Schema = {"operationId": operation_id, "summary": summary, "responses": responses}
    if parameters:
        operation["parameters"] = parameters
    if open_route:
        operation["security"] = _OPEN
    return {"get": operation}


def _path_parameter(name: str, description: str) -> Schema:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": {"type": "string"}}


def _ok(description: str, content: Schema) -> Schema:
    return {"description": description, "content": content}


_STREAM_NOTE = ("With `stream: true`, server-sent events: `data: <chunk JSON>` per event, then `data: [DONE]`; "
                "an error after the stream started arrives as `data: {\"error\": ...}`.")


def _stream(description: str) -> Schema:
    return {"text/event-stream": {"schema": {"type": "string", "description": description}}}


_IMAGE_BYTES = {"image/*": {"schema": {"type": "string", "contentMediaType": "image/*"}}}


def _paths() -> dict[str, Schema]:
    return {
        "/v1/chat/completions": _post("createChatCompletion", "Create a chat completion", "ChatCompletionRequest", {
            "description": "A chat completion. " + _STREAM_NOTE,
            "content": {**_json(_ref("ChatCompletion")), **_stream("ChatCompletionChunk events")},
        }),
        "/v1/completions": _post("createCompletion", "Create a completion", "CompletionRequest", {
            "description": "A completion. " + _STREAM_NOTE,
            "content": {**_json(_ref("Completion")), **_stream("text_completion events")},
        }),
        "/v1/embeddings": _post("createEmbedding", "Create embeddings", "EmbeddingRequest",
                                _ok("One embedding per input, in input order.", _json(_ref("EmbeddingList")))),
        "/v1/images/generations": _post("createImage", "Create images", "ImageRequest",
                                        _ok("The generated images.", _json(_ref("ImagesResponse")))),
        "/v1/moderations": _post("createModeration", "Classify input as potentially harmful", "ModerationRequest",
                                 _ok("One result per input.", _json(_ref("ModerationResponse")))),
        "/v1/models": _get("listModels", "List the live models and their aliases",
                           {"200": _ok("The models.", _json(_ref("ModelList"))), **_errors("401")}),
        "/v1/models/{model}": _get(
            "retrieveModel", "Retrieve a model",
            {"200": _ok("The model.", _json(_ref("Model"))), **_errors("401", "404")},
            parameters=[_path_parameter("model", "a model id or alias; ids may contain '/'")],
        ),
        "/images/{name}": _get(
            "getImage", "An image this gateway stored for a url response",
            {"200": _ok("The image's bytes.", _IMAGE_BYTES), **_errors("404")},
            open_route=True,
            parameters=[_path_parameter("name", "the random name in the url the images response gave")],
        ),
        "/": _get("root", "Liveness (seed 000's health check)", {"200": _ok("OK", _TEXT)}, open_route=True),
        "/healthz": _get("healthz", "Liveness", {"200": _ok("OK", _TEXT)}, open_route=True),
        "/readyz": _get("readyz", "Readiness: connected to NATS and not draining",
                        {"200": _ok("ready", _TEXT), "503": _ok("not ready", _TEXT)}, open_route=True),
        "/metrics": _get("metrics", "Prometheus metrics", {"200": _ok("The exposition.", _TEXT)}, open_route=True),
        "/openapi.json": _get("openapi", "This document",
                              {"200": _ok("The OpenAPI document.", _json({"type": "object"}))}, open_route=True),
    }


# ---- go-chatgpt-api's routes (seed 003; routes/chatgpt_web.py) ---------------------------------

_CHATGPT_NOTE = (
    "Relayed to a chatgpt-web-worker as one ChatGPT backend-api call. The upstream's status and JSON body are "
    "passed through as they are (a 404 `{\"detail\": ...}` stays a 404); only failures of the gateway's own "
    "(validation, no worker, bus, time limits) use the Error shape. A ChatGPT access token (a JWT) in "
    "`Authorization` or `X-Authorization` is used for the call; the gateway's key then goes in `X-Api-Key`."
)
_CHATGPT_SECURITY: list[Schema] = [{"bearerAuth": []}, {"apiKeyHeader": []}]
_CHATGPT_ERRORS = ("400", "401", "404", "413", "502", "503", "504")
_UPSTREAM_JSON = _ok("The upstream's status and JSON body, passed through. " + _CHATGPT_NOTE,
                     _json({"description": "the ChatGPT backend-api's response body"}))
_CONVERSATION_ID = _path_parameter("id", "a conversation id: 1 to 64 letters, digits or '-'")


def _chatgpt(operation_id: str, summary: str, request: str | None = None, *, response: Schema = _UPSTREAM_JSON,
             parameters: list[Schema] | None = None) -> Schema:
    operation: Schema = {"operationId": operation_id, "summary": summary, "security": _CHATGPT_SECURITY,
                         "responses": {"200": response, **_errors(*_CHATGPT_ERRORS)}}
    if request is not None:
        operation["requestBody"] = {"required": True, "content": _json(_ref(request))}
    if parameters:
        operation["parameters"] = parameters
    return operation


def _chatgpt_paths() -> dict[str, Schema]:
    listing = [
        {"name": "offset", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 0, "default": 0}},
        {"name": "limit", "in": "query", "required": False,
         "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 20}},
    ]
    update = "ChatGPTUpdateConversationRequest"
    hide = "ChatGPTHideConversationsRequest"
    turn = _ok(
        "`data: <the upstream's event JSON>` per event, in order, then `data: [DONE]`; a failure after the first "
        "event ends the stream with `data: {\"error\": ...}` and `[DONE]`. A turn that fails before its first "
        "event answers with the upstream's status and JSON body instead. " + _CHATGPT_NOTE,
        {**_stream("the ChatGPT backend-api's conversation events"),
         **_json({"description": "the upstream's body of a turn that failed before its first event"})},
    )
    return {
        "/conversations": {
            "get": _chatgpt("chatgptListConversations", "List the account's conversations", parameters=listing),
            "patch": _chatgpt("chatgptHideConversations", "Hide (delete) all conversations", hide),
            "post": _chatgpt("chatgptHideConversationsPost", "As PATCH, for clients that cannot PATCH", hide),
        },
        "/conversation": {
            "post": _chatgpt("chatgptConversation", "Send a conversation turn", "ChatGPTConversationRequest",
                             response=turn),
        },
        "/conversation/message_feedback": {
            "post": _chatgpt("chatgptMessageFeedback", "Rate a message", "ChatGPTFeedbackRequest"),
        },
        "/conversation/gen_title/{id}": {
            "post": _chatgpt("chatgptGenerateTitle", "Generate a conversation's title", "ChatGPTGenTitleRequest",
                             parameters=[_CONVERSATION_ID]),
        },
        "/conversation/{id}": {
            "get": _chatgpt("chatgptGetConversation", "A conversation's messages", parameters=[_CONVERSATION_ID]),
            "patch": _chatgpt("chatgptUpdateConversation", "Rename, hide (delete) or archive a conversation",
                              update, parameters=[_CONVERSATION_ID]),
            "post": _chatgpt("chatgptUpdateConversationPost", "As PATCH, for clients that cannot PATCH", update,
                             parameters=[_CONVERSATION_ID]),
        },
        "/auth/login": {
            "post": _chatgpt("chatgptLogin", "Log in with a ChatGPT account (the worker's configured auth endpoint)",
                             "ChatGPTLoginRequest"),
        },
    }


# ---- SydneyQt's web API (seed 000; routes/sydney.py) --------------------------------------------

_SYDNEY_NOTE = ("Relayed to a sydney-worker (image creation: image-worker's Bing backend) as one job. `cookies`, the "
                "caller's own Bing cookies, are used for the call instead of a pool account; they are never logged "
                "or echoed. Failures use the Error shape.")
_SYDNEY_ERRORS = ("400", "401", "404", "413", "429", "502", "503", "504")
_GENERATE_IMAGE_RESULT: Schema = {
    "type": "object",
    "required": ["text", "url", "image_urls", "duration"],
    "properties": {"text": {"type": "string"}, "url": {"type": "string"},
                   "image_urls": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                   "duration": {"type": "integer", "minimum": 0, "description": "nanoseconds (a Go time.Duration)"}},
}
_UPLOAD_FORM: Schema = {
    "type": "object",
    "required": ["file"],
    "properties": {
        "file": {"type": "string", "contentMediaType": "application/octet-stream",
                 "description": "a PNG, JPEG, GIF or WEBP image (judged by its bytes)"},
        "cookies": {"type": "string", "maxLength": MAX_COOKIES, "description": "the caller's own Bing cookies"},
    },
}


def _sydney(operation_id: str, summary: str, request: Schema, response: Schema) -> Schema:
    return {"post": {"operationId": operation_id, "summary": summary, "requestBody": {"required": True,
                                                                                      "content": request},
                     "responses": {"200": response, **_errors(*_SYDNEY_ERRORS)}}}


def _sydney_paths() -> dict[str, Schema]:
    stream = _ok(
        "Server-sent events as SydneyQt wrote them: `event: <type>` then `data: <the text as a JSON string>` per "
        "event (search_query, search_result, loading, generative_image, generative_music, executing_task, "
        "openapi_call, generated_code, resolving_captcha, message, suggested_responses), no final sentinel. A "
        "failure before the first event is an HTTP error; after it, the last event is `event: error` with its "
        "message. " + _SYDNEY_NOTE,
        {"text/event-stream": {"schema": {"type": "string"}}},
    )
    return {
        "/chat/stream": _sydney("sydneyChatStream", "A Bing Chat turn, streamed (SydneyQt's /chat/stream)",
                                _json(_ref("SydneyChatStreamRequest")), stream),
        "/image/upload": _sydney("sydneyImageUpload", "Upload an image for a turn's imageUrl",
                                 {"multipart/form-data": {"schema": _UPLOAD_FORM}},
                                 _ok("The image's URL at Bing (text/plain). " + _SYDNEY_NOTE, _TEXT)),
        "/image/create": _sydney("sydneyImageCreate", "Bing Image Creator's images for a turn's generative_image",
                                 _json(_ref("SydneyImageCreateRequest")),
                                 _ok("SydneyQt's GenerateImageResult. " + _SYDNEY_NOTE,
                                     _json(_ref("GenerateImageResult")))),
    }


# ---- the admin API (routes/admin.py) -----------------------------------------------------------

_ADMIN_NOTE = (" Guarded by ADMIN_KEY (`Authorization: Bearer <ADMIN_KEY>`); without an ADMIN_KEY configured "
               "every admin route answers 404.")
_ADMIN_SECURITY: list[Schema] = [{"adminKey": []}]
_SEED_ERROR: Schema = {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}
_LIMITS: Schema = {
    "name": {"type": "string"}, "owner": {"type": "string"},
    "expires_at": {"type": ["number", "null"], "description": "unix seconds; null: never"},
    "enabled": {"type": "boolean"},
    "models": {"type": ["array", "null"], "items": {"type": "string", "minLength": 1},
               "description": "allowed model patterns (fnmatch); null: every model (stored, enforced later)"},
    **{name: {"type": ["integer", "null"], "minimum": 0, "description": what + " (stored, enforced later)"}
       for name, what in (("rpm", "requests per minute"), ("tpm", "tokens per minute"),
                          ("max_concurrent", "requests in progress at once"),
                          ("budget_total", "tokens over the key's life"),
                          ("budget_period_tokens", "tokens per period"),
                          ("budget_period_seconds", "the period's length"))},
}
_KEY_FIELDS: Schema = {"type": "object", "additionalProperties": False, "properties": _LIMITS}
_API_KEY: Schema = {
    "type": "object", "required": ["object", "id", "key", "created", "enabled"],
    "properties": {"object": {"const": "api_key"}, "id": {"type": "string"},
                   "key": {"type": "string", "description": "masked (`sb-…abcd`), except in the create response"},
                   "created": {"type": "number"}, **_LIMITS},
}
_ADMIN_ERRORS = ("400", "401", "404")
_KEY_ID = _path_parameter("id", "a key id (`key_…`)")


def _admin(operation_id: str, summary: str, response: Schema, *, body: Schema | None = None,
           parameters: list[Schema] | None = None, errors: tuple[str, ...] = _ADMIN_ERRORS) -> Schema:
    operation: Schema = {"operationId": operation_id, "summary": summary + "." + _ADMIN_NOTE,
                         "security": _ADMIN_SECURITY, "responses": {"200": response, **_errors(*errors)}}
    if body is not None:
        operation["requestBody"] = {"required": True, "content": _json(body)}
    if parameters:
        operation["parameters"] = parameters
    return operation


def _seed_admin(operation_id: str, summary: str, body: Schema | None, response: Schema) -> Schema:
    """Seed 002's shapes: its errors are `{"error": "<text>"}`, not the Error schema."""
    seed_errors = {"400": _ok("Invalid request body", _json(_SEED_ERROR)),
                   "401": _ok("Invalid admin key (never echoed)", _json(_SEED_ERROR)), **_errors("404")}
    operation: Schema = {"operationId": operation_id, "summary": summary + "." + _ADMIN_NOTE,
                         "security": [*_ADMIN_SECURITY, {}], "responses": {"200": _ok("OK", _json(response)),
                                                                           **seed_errors}}
    if body is not None:
        operation["requestBody"] = {"required": True, "content": _json(body)}
    return operation


def _admin_paths() -> dict[str, Schema]:
    admin_key = {"admin_key": {"type": "string", "description": "ADMIN_KEY (or send it as a bearer token)"}}
    user = {"type": "object", "required": ["user_id", "token"],
            "properties": {"user_id": {"type": "string"}, "token": {"type": "string"}}}
    one = _ok("The key (masked).", _json(_API_KEY))
    return {
        "/admin/users/add": {"post": _seed_admin(
            "adminUsersAdd", "Create an API key (seed 002); its token is shown in this response only",
            {"type": "object", "properties": admin_key}, user)},
        "/admin/users/delete": {"post": _seed_admin(
            "adminUsersDelete", "Delete an API key by user_id (seed 002); 200 for an unknown id too",
            {"type": "object", "required": ["user_id"], "properties": {**admin_key, "user_id": {"type": "string"}}},
            {"type": "object", "properties": {"message": {"const": "User deleted"}}})},
        "/admin/users": {"get": {**_seed_admin(
            "adminUsersList", "Every API key as seed 002's users, tokens masked; `users` is null when none",
            None, {"type": "object", "properties": {"users": {"type": ["array", "null"], "items": user}}}),
            "parameters": [{"name": "admin_key", "in": "query", "required": False, "schema": {"type": "string"}}]}},
        "/admin/keys": {
            "get": _admin("listKeys", "Every API key, masked", _ok("The keys.", _json({
                "type": "object", "properties": {"object": {"const": "list"},
                                                 "data": {"type": "array", "items": _API_KEY}}})),
                          errors=("401", "404")),
            "post": _admin("createKey", "Create an API key: `key` is shown in this response only",
                           _ok("The new key, unmasked.", _json(_API_KEY)), body=_KEY_FIELDS),
        },
        "/admin/keys/{id}": {
            "get": _admin("getKey", "One API key, masked", one, parameters=[_KEY_ID]),
            "patch": _admin("updateKey", "Update a key's fields", one, body=_KEY_FIELDS, parameters=[_KEY_ID]),
            "delete": _admin("deleteKey", "Delete a key: it stops working on every edge within a second", _ok(
                "Deleted.", _json({"type": "object", "properties": {
                    "id": {"type": "string"}, "object": {"const": "api_key.deleted"}, "deleted": {"const": True}}})),
                parameters=[_KEY_ID]),
        },
        "/admin/keys/{id}/disable": {"post": _admin(
            "disableKey", "Disable a key on every edge (PATCH enabled=true enables it again)", one,
            parameters=[_KEY_ID])},
        "/admin/keys/{id}/usage": {"get": _admin(
            "getKeyUsage", "A key's usage over a period (default the last 24 h): its records, oldest first, or "
            "with group=hour its hourly aggregates per model. Any key id: `static-<n>` (the n-th of "
            "AUTH_TOKEN/AUTH_TOKENS), `open`, and deleted keys too", _ok("The records or the hourly aggregates.",
                                                                         _json(_USAGE_LIST)),
            parameters=[_KEY_ID, *_USAGE_PARAMETERS])},
        "/admin/pools": {"get": _admin(
            "listPools", "Every web pool's accounts and their shared state (read-only; never a secret)",
            _ok("The pools.", _json(_POOLS)), errors=("401", "404"))},
    }


def _agents_paths() -> dict[str, Schema]:
    """Seed 002's /api/ routes (routes/agents.py): its bodies, its `{"error": "<text>"}` errors."""
    answer = {"type": "object", "required": ["id", "response_id", "conversation_id", "content", "error"],
              "properties": {k: {"type": "string"} for k in ("id", "response_id", "conversation_id", "content",
                                                              "error")}}
    ask = {"type": "object", "properties": {
        "content": {"type": "string"},
        "conversation_id": {"type": "string", "description": "with parent_id, or neither"},
        "parent_id": {"type": "string", "description": "the previous answer's response_id"},
        "message_id": {"type": "string"}}}
    seed_error = _json(_SEED_ERROR)
    connection = {"type": "object", "required": ["Ws", "Id", "Heartbeat", "LastMessageTime"], "properties": {
        "Ws": {"type": "object"}, "Id": {"type": "string", "description": "the agent's public handle"},
        "Heartbeat": {"type": "string"}, "LastMessageTime": {"type": "string"},
        "bridge": {"type": "string"}, "state": {"enum": ["idle", "busy"]}}}
    return {
        "/api/ask": {"post": {
            "operationId": "apiAsk",
            "summary": "Ask ChatGPT through a connected browser agent, else a ChatGPT web account (seed 002). "
                       "`Authorization: <token>` or `Bearer <token>`: an API key or ADMIN_KEY. The body is JSON "
                       "whatever its Content-Type.",
            "requestBody": {"required": True, "content": _json(ask)},
            "responses": {"200": _ok("The answer.", _json(answer)),
                          "400": _ok("Invalid request", seed_error),
                          "401": _ok("API key not provided / Invalid API key", seed_error),
                          "500": _ok("Conversation doesn't exists / Connection no longer exists / Failed to read "
                                     "response from the client / Failed to convert response to ChatGptResponse",
                                     seed_error),
                          "503": _ok("No available clients / Ping failed", seed_error)}}},
        "/api/connections": {"get": {
            "operationId": "apiConnections",
            "summary": "The connected agents (seed 002); `connections` is null when none." + _ADMIN_NOTE,
            "security": [*_ADMIN_SECURITY, {}],
            "parameters": [{"name": "admin_key", "in": "query", "required": False, "schema": {"type": "string"}}],
            "responses": {"200": _ok("The agents.", _json({"type": "object", "properties": {
                "connections": {"type": ["array", "null"], "items": connection}}})),
                "401": _ok("Invalid admin key", seed_error), **_errors("404")}}},
    }


def _usage_record() -> Schema:
    """A record as the bus contract has it (proto/schemas/v1/usage.json)."""
    return copy.deepcopy(proto.schema("switchyard.v1.usage")["$defs"]["record"])


def _query(name: str, description: str, schema: Schema) -> Schema:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


_INSTANT: Schema = {"oneOf": [{"type": "number"}, {"type": "string", "format": "date-time"}]}
_USAGE_PARAMETERS = [
    _query("start", "unix seconds or RFC 3339; default: 24 h before `end`", _INSTANT),
    _query("end", "unix seconds or RFC 3339; default: now", _INSTANT),
    _query("group", "`hour`: the hourly aggregates; absent: the records", {"enum": ["hour"]}),
    _query("limit", "records at most (not with group=hour)", {"type": "integer", "minimum": 1, "maximum": 10000,
                                                                "default": 1000}),
]
_HOURLY: Schema = {
    "type": "object", "required": ["hour", "start", "models"],
    "properties": {
        "hour": {"type": "string", "description": "YYYYMMDDHH, UTC"}, "start": {"type": "number"},
        "models": {"type": "object", "additionalProperties": {
            "type": "object", "properties": {
                "requests": {"type": "integer"}, "prompt_tokens": {"type": "integer"},
                "completion_tokens": {"type": "integer"},
                "estimated_requests": {"type": "integer", "description": "requests whose tokens are estimates"},
                "end_reasons": {"type": "object", "additionalProperties": {"type": "integer"},
                                "description": "stop, length, client_gone, upstream_error, timeout → requests"}}}},
    },
}
_USAGE_LIST: Schema = {
    "type": "object", "required": ["object", "key", "start", "end", "data"],
    "properties": {
        "object": {"const": "list"}, "key": {"type": "string"}, "start": {"type": "number"}, "end": {"type": "number"},
        "group": {"const": "hour"}, "has_more": {"type": "boolean", "description": "records only: more than `limit`"},
        "data": {"type": "array", "items": {"oneOf": [_usage_record(), _HOURLY]}},
    },
}
_ACCOUNT: Schema = {
    "type": "object", "required": ["name", "state"],
    "properties": {
        "name": {"type": "string"}, "state": {"enum": ["free", "leased", "cooling", "quarantined"]},
        "until": {"type": ["number", "null"], "description": "unix seconds the lease or the cooldown ends"},
        "holder": {"type": ["string", "null"], "description": "leased: the worker holding it"},
        "reason": {"type": "string", "description": "why it cools or is quarantined"},
        "model_cooldowns": {"type": "object", "additionalProperties": {"type": "number"}},
        "level": {"type": "integer"}, "conversations_today": {"type": "integer"},
        "daily_budget": {"type": ["integer", "null"]},
    },
}
_POOLS: Schema = {
    "type": "object", "properties": {"object": {"const": "list"}, "data": {"type": "array", "items": {
        "type": "object",
        "properties": {"pool": {"type": "string"}, "accounts": {"type": "array", "items": _ACCOUNT}}}}},
}


def _version() -> str:
    try:
        return importlib.metadata.version("switchyard")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree without installing
        return "0"


# component name -> the body kind (validation.BODIES) it describes
_REQUESTS = {"ChatCompletionRequest": "chat", "CompletionRequest": "completion", "EmbeddingRequest": "embedding",
             "ImageRequest": "image", "ModerationRequest": "moderation"}


def openapi_document(*, max_n: int | None = None) -> dict[str, Any]:
    """The whole document, a fresh copy (the route serves it built once). `max_n`: this edge's
    MAX_N, the most choices or images `n` may ask for (unbounded in the document when None)."""
    requests = {name: body_schema(kind, max_n=max_n) for name, kind in _REQUESTS.items()}
    return copy.deepcopy({
        "openapi": "3.1.0",
        "info": {
            "title": "Switchyard",
            "version": _version(),
            "description": "A self-hosted OpenAI-compatible gateway. Request bodies are checked strictly for what "
                           "the gateway acts on and by JSON type for what it forwards; unknown fields are forwarded "
                           "as they are, and an explicit null counts as an absent field.",
        },
        "paths": {**_paths(), **_chatgpt_paths(), **_sydney_paths(), **_admin_paths(), **_agents_paths()},
        "components": {
            "schemas": {"Error": _ERROR, **requests, **_RESPONSES,
                        **{name: chatgpt_body_schema(name) for name in CHATGPT_BODIES},
                        **{name: sydney_body_schema(name) for name in SYDNEY_BODIES},
                        "GenerateImageResult": _GENERATE_IMAGE_RESULT},
            "responses": {f"Error{status}": _error_response(description, retry)
                          for status, (description, retry) in _ERRORS.items()},
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer",
                                               "description": "one of the keys in AUTH_TOKEN"},
                                "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-Api-Key",
                                                 "description": "one of the keys in AUTH_TOKEN, on go-chatgpt-api's "
                                                                "routes when Authorization holds a ChatGPT access "
                                                                "token"}},
        },
        "security": [{"bearerAuth": []}],
    })
