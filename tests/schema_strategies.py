"""Hypothesis strategies from the edge's OpenAPI document: valid request bodies drawn from a body's
JSON Schema, and bodies broken on purpose (wrong types, missing required fields, extra fields,
huge, deep or odd-unicode values).

It covers the JSON Schema the document uses (type, enum, const, anyOf/oneOf, pattern, min/max,
properties/required, additionalProperties, $ref); `dependentSchemas` and anything else is left to
the caller's check of the drawn value against the whole schema (`valid_bodies` does it).
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st
from jsonschema import Draft202012Validator

Schema = dict[str, Any]

# the edge parses JSON with orjson, whose integers are 64-bit: a valid body stays inside
_INT64 = (-(2**63), 2**63 - 1)
ODD_TEXT = st.sampled_from([
    "", " ", "\x00", "\u202e\u0645\u0631\u062d\u0628\u0627", "\U0001f600" * 3, "\ufeff", "\uffff", "e\u0301",
    "\\", '"', "[sandbox hang=1]", "a" * 300, "\n\r\t",
])
JSON_SCALARS = (st.none() | st.booleans() | st.integers(*_INT64) | st.floats(allow_nan=False, allow_infinity=False)
                | st.text(max_size=20) | ODD_TEXT)
JSON_VALUES = st.recursive(
    JSON_SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def _resolve(schema: Schema, document: Schema) -> Schema:
    while "$ref" in schema:
        node: Any = document
        for part in schema["$ref"].removeprefix("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def from_schema(schema: Schema, document: Schema) -> st.SearchStrategy[Any]:
    """Values valid against `schema` (but for `dependentSchemas`, see the module docstring)."""
    schema = _resolve(schema, document)
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return st.one_of([from_schema(s, document) for s in schema[key]])
    kind = schema.get("type")
    if isinstance(kind, list):
        return st.one_of([from_schema({**schema, "type": k}, document) for k in kind])
    if kind == "string":
        if "pattern" in schema:
            return st.from_regex(schema["pattern"], fullmatch=True)
        return st.text(min_size=schema.get("minLength", 0), max_size=30) | ODD_TEXT.filter(
            lambda text: len(text) >= schema.get("minLength", 0))
    if kind == "integer":
        return st.integers(max(schema.get("minimum", _INT64[0]), _INT64[0]),
                           min(schema.get("maximum", _INT64[1]), _INT64[1]))
    if kind == "number":
        return st.floats(allow_nan=False, allow_infinity=False) | st.integers(*_INT64)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        low = schema.get("minItems", 0)
        items = from_schema(schema["items"], document) if "items" in schema else JSON_VALUES
        return st.lists(items, min_size=low, max_size=min(schema.get("maxItems", low + 3), low + 3))
    if kind == "object":
        return _object(schema, document)
    return JSON_VALUES


def _object(schema: Schema, document: Schema) -> st.SearchStrategy[dict[str, Any]]:
    properties: dict[str, Schema] = schema.get("properties", {})
    required = set(schema.get("required", ()))
    extra = schema.get("additionalProperties")
    if not properties:
        values = from_schema(extra, document) if isinstance(extra, dict) else JSON_VALUES
        return st.dictionaries(st.text(max_size=10), values, max_size=3)
    return st.fixed_dictionaries(
        {name: from_schema(properties[name], document) for name in properties if name in required},
        optional={name: from_schema(properties[name], document) for name in properties if name not in required},
    )


def valid_bodies(schema: Schema, document: Schema) -> st.SearchStrategy[dict[str, Any]]:
    """Bodies valid against the whole schema, cross-field keywords included."""
    validator = Draft202012Validator({**_resolve(schema, document), "components": document.get("components", {})})
    return _object(_resolve(schema, document), document).filter(validator.is_valid)


def _wrong_type(schema: Schema) -> st.SearchStrategy[Any]:
    validator = Draft202012Validator(schema)
    return JSON_VALUES.filter(lambda value: value is not None and not validator.is_valid(value))


def _deep(depth: int) -> Any:
    value: Any = "bottom"
    for i in range(depth):
        value = [value] if i % 2 else {"x": value}
    return value


@st.composite
def broken_bodies(draw: st.DrawFn, schema: Schema, document: Schema) -> Any:
    """A body the edge must refuse (or, for a few mutations such as an extra field, may accept):
    never one that makes it fail."""
    schema = _resolve(schema, document)
    body = dict(draw(valid_bodies(schema, document)))
    properties: dict[str, Schema] = schema["properties"]
    mutation = draw(st.sampled_from(["missing", "wrong_type", "extra", "huge", "deep", "odd_unicode", "not_object"]))
    if mutation == "missing":
        body.pop(draw(st.sampled_from(schema["required"])))
    elif mutation == "wrong_type":
        name = draw(st.sampled_from(sorted(properties)))
        body[name] = draw(_wrong_type(properties[name]))
    elif mutation == "extra":
        body[draw(st.text(min_size=1, max_size=20).filter(lambda key: key not in properties))] = draw(JSON_VALUES)
    elif mutation == "huge":
        name = draw(st.sampled_from(sorted(properties)))
        body[name] = draw(st.sampled_from(["x" * 1_000_000, ["x"] * 50_000, 10**18, -(10**18), 1e308]))
    elif mutation == "deep":
        body[draw(st.sampled_from(sorted(properties)))] = _deep(draw(st.integers(60, 300)))
    elif mutation == "odd_unicode":
        name = draw(st.sampled_from(sorted(properties)))
        body[name] = draw(ODD_TEXT | st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=40))
    else:
        return draw(JSON_VALUES.filter(lambda value: not isinstance(value, dict)))
    return body
