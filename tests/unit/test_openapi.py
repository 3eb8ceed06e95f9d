"""The OpenAPI document: a valid OpenAPI 3.1 document whose every schema is valid JSON Schema, that
documents every route the edge registers, and whose request bodies say exactly what the edge's
validation accepts (generated from the same tables: a field added to one appears in the other)."""

from __future__ import annotations

import math
import re
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from starlette.routing import Route

from libs.errors import InvalidRequest
from services.edge.app import create_app
from services.edge.openapi import openapi_document
from services.edge.routes.openapi import OpenAPIRoute
from services.edge.settings import EdgeSettings
from services.edge.validation import (
    BODIES,
    Required,
    schema_of,
    validate_chat_request,
    validate_completion_request,
    validate_embedding_request,
    validate_image_request,
    validate_moderation_request,
)
from services.edge.validation_chatgpt import CHATGPT_BODIES
from services.edge.validation_sydney import SYDNEY_BODIES
from tests.schema_strategies import JSON_VALUES, valid_bodies

MAX_N = 128  # the edge's default
DOC = openapi_document(max_n=MAX_N)
METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
# body kind -> its route, and how the edge validates it
PATH_OF = {"chat": "/v1/chat/completions", "completion": "/v1/completions", "embedding": "/v1/embeddings",
           "image": "/v1/images/generations", "moderation": "/v1/moderations"}
VALIDATE = {
    "chat": lambda body: validate_chat_request(body, max_n=MAX_N),
    "completion": lambda body: validate_completion_request(body, max_n=MAX_N),
    "embedding": validate_embedding_request,
    "image": lambda body: validate_image_request(body, max_n=MAX_N),
    "moderation": validate_moderation_request,
}


def resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = DOC
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def request_schema(kind: str) -> dict[str, Any]:
    return resolve(DOC["paths"][PATH_OF[kind]]["post"]["requestBody"]["content"]["application/json"]["schema"])


def walk(node: Any, path: str = "#") -> Any:
    """(path, node) for every dict in the document."""
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from walk(value, f"{path}/{i}")


# ---- the document is well formed --------------------------------------------------------------


def test_document_structure() -> None:
    """What an OpenAPI 3.1 validator checks, short of its meta-schema (see the next test)."""
    assert DOC["openapi"] == "3.1.0" and DOC["info"]["title"] and DOC["info"]["version"]
    assert DOC["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http", "scheme": "bearer", "description": "one of the keys in AUTH_TOKEN"}
    operation_ids = []
    for path, item in DOC["paths"].items():
        assert path.startswith("/")
        declared = set(re.findall(r"{([^}]+)}", path))
        for method, operation in item.items():
            assert method in METHODS
            operation_ids.append(operation["operationId"])
            params = {p["name"] for p in operation.get("parameters", ()) if p["in"] == "path"}
            assert params == declared, (path, method)
            assert operation["responses"] and all(re.fullmatch(r"[1-5]\d\d", s) for s in operation["responses"])
            for status, response in operation["responses"].items():
                response = resolve(response)
                assert response["description"]
                # readiness answers a plain 503; seed 002's admin routes their `{"error": "<text>"}`
                seed002 = (path.startswith("/admin/users") and status < "404") or (
                    path.startswith("/api/") and status != "404")  # seed 002's /api/ routes: its bodies
                if status >= "400" and path != "/readyz" and not seed002:
                    assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    assert len(operation_ids) == len(set(operation_ids))
    for where, node in walk(DOC):
        if "$ref" in node:
            assert resolve(node), where  # every reference resolves


def test_document_passes_an_openapi_validator() -> None:
    import openapi_spec_validator  # a dev dependency: the document is checked as OpenAPI 3.1

    openapi_spec_validator.validate(DOC)


def test_every_schema_is_valid_json_schema() -> None:
    schemas = [(f"#/components/schemas/{name}", s) for name, s in DOC["components"]["schemas"].items()]
    schemas += [(where + "/schema", node["schema"]) for where, node in walk(DOC["paths"]) if "schema" in node]
    schemas += [(where + "/schema", node["schema"]) for where, node in walk(DOC["components"]["responses"])
                if "schema" in node]
    assert len(schemas) > 30
    for where, schema in schemas:
        try:
            Draft202012Validator.check_schema(schema)
        except SchemaError as err:
            pytest.fail(f"{where}: {err.message}")


def test_served_as_json_built_once() -> None:
    route = OpenAPIRoute(MAX_N)
    assert orjson.loads(route.body) == DOC
    assert orjson.loads(OpenAPIRoute().body) == openapi_document()  # `n` unbounded


async def test_the_route_serves_it() -> None:
    app = Route("/openapi.json", OpenAPIRoute(MAX_N), methods=["GET"])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://edge") as client:
        reply = await client.get("/openapi.json")
    assert reply.status_code == 200 and reply.headers["content-type"] == "application/json"
    assert reply.json() == DOC


# ---- it documents every route -----------------------------------------------------------------


def test_every_registered_route_is_documented() -> None:
    app, _ = create_app(EdgeSettings.from_env({}))
    routes = [r for r in app.router.routes if isinstance(r, Route)]  # type: ignore[attr-defined]
    assert len(routes) >= 8
    for route in routes:
        path = re.sub(r"{(\w+):\w+}", r"{\1}", route.path)  # `{model:path}` is `{model}` in OpenAPI
        assert path in DOC["paths"], f"{route.path} is served but not documented in services/edge/openapi.py"
        documented = set(DOC["paths"][path])
        served = {m.lower() for m in route.methods or ()} - {"head"}  # Starlette adds HEAD to every GET
        assert served <= documented, (route.path, served - documented)


def test_every_documented_post_route_has_a_validated_body() -> None:
    posts = {path for path, item in DOC["paths"].items() if "post" in item}
    openai = {path for path in posts if path.startswith("/v1/")}
    assert openai == set(PATH_OF.values()) and set(BODIES) == set(PATH_OF)
    admin = {path for path in posts if path.startswith("/admin/")}  # libs/keys.py's fields (test_keys_record.py)
    # the upload is a multipart form (multipart_form.py); /api/ask seed 002's four strings (routes/agents.py)
    for path in posts - openai - admin - {"/image/upload", "/api/ask"}:
        # go-chatgpt-api's and SydneyQt's routes: their bodies come from validation_chatgpt's and validation_sydney's
        schema = DOC["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert schema["$ref"].rsplit("/", 1)[1] in {**CHATGPT_BODIES, **SYDNEY_BODIES}, path


# ---- the bodies say what validation accepts ---------------------------------------------------


@pytest.mark.parametrize("kind", sorted(BODIES))
def test_every_table_field_is_documented(kind: str) -> None:
    table, _ = BODIES[kind]
    schema = request_schema(kind)
    assert list(schema["properties"]) == list(table)  # every field, in the table's (OpenAI's docs') order
    assert schema.get("required", []) == [name for name, rule in table.items() if isinstance(rule, Required)]
    for name, rule in table.items():
        expected = schema_of(rule)
        if name == "n":
            expected["maximum"] = min(expected.get("maximum", MAX_N), MAX_N)
        assert schema["properties"][name] == expected, name  # nested tables included


SETTINGS = settings(max_examples=100, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


def has_integral_float(value: Any) -> bool:
    # JSON Schema's "integer" admits 1.0; the edge, as OpenAI, does not: the one known gap
    if isinstance(value, float):
        return math.isfinite(value) and value.is_integer()
    if isinstance(value, list):
        return any(has_integral_float(v) for v in value)
    if isinstance(value, dict):
        return any(has_integral_float(v) for v in value.values())
    return False


def accepted(kind: str, body: Any) -> bool:
    try:
        VALIDATE[kind](body)
        return True
    except InvalidRequest:
        return False


@pytest.mark.parametrize("kind", sorted(BODIES))
def test_what_the_document_allows_the_edge_accepts(kind: str) -> None:
    schema = request_schema(kind)

    @SETTINGS
    @given(valid_bodies(schema, DOC))
    def check(body: dict[str, Any]) -> None:
        best_of, n = body.get("best_of"), body.get("n")
        assume(not (kind == "completion" and best_of is not None and n is not None and best_of < n))  # in words only
        assert accepted(kind, body), body

    check()


@pytest.mark.parametrize("kind", sorted(BODIES))
def test_a_field_the_edge_refuses_the_document_refuses(kind: str) -> None:
    """One field of a valid body replaced by any JSON value: the edge and the document agree."""
    schema = request_schema(kind)
    validator = Draft202012Validator(schema)

    @SETTINGS
    @given(valid_bodies(schema, DOC), st.sampled_from(list(schema["properties"])), JSON_VALUES)
    def check(body: dict[str, Any], name: str, value: Any) -> None:
        assume(value is not None and not has_integral_float(value))  # null is absent at the edge
        body = {**body, name: value}
        best_of, n = body.get("best_of"), body.get("n")
        assume(not (kind == "completion" and type(best_of) is int and type(n) is int and best_of < n))
        assert accepted(kind, body) == validator.is_valid(body), (name, value)

    check()
