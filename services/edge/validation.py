"""Request validation for the edge's POST routes, with OpenAI-style errors.

The rule: the edge validates strictly what the gateway itself acts on, and only the JSON type of
what it merely forwards. Acted on: `model` (routing), `messages` (a non-empty array of objects,
each with a string `role`), `prompt` (split into choices), `n` (fan-out; at least 1, at most the
gateway's MAX_N), `stream`, `stream_options` (rewritten by the worker, so judged here, `stream`
true included), and `best_of` against `n` (a fan-out changes `n`); for embeddings `input` (split into jobs; at most
2048 inputs, none empty) and `encoding_format`; for images `n`, `size` (`<W>x<H>`, `<W>*<H>` or
`auto`) and `response_format` (the gateway stores url images itself); for moderations `input`.
Every other known field is
checked for its JSON type only (a number, a string, an array of objects...), never for its value:
OpenAI adds enum values and widens ranges often (`reasoning_effort: "none"`, `tools: [{"type":
"custom"}]`), and the upstream judges them. Unknown fields are forwarded as they are.

Each endpoint is one declarative FIELD TABLE (field name → rule, in the order of OpenAI's docs);
a rule is a function `(value, path) -> None` that raises `InvalidRequest` naming the exact path
(`messages[2].content`, `tools[0].function`, `logit_bias.50256`). Rules shared by both
endpoints are the same objects. Cross-field constraints run after the tables. An explicit `null`
counts as absent everywhere, as OpenAI does for optional fields; for a required one it is
reported as missing.

Each rule also carries a JSON Schema of what it accepts (`schema_of`), made by the same factory
call, so the OpenAPI document (services/edge/openapi.py) is generated from these tables and
cannot drift from them. The schemas cost nothing per request: they are built once, at import.

JSON types are checked exactly: Python's `bool` is an `int`, but a JSON `true` is not a number;
`1.0` is not an integer (OpenAI rejects it); NaN/±Infinity are rejected too (orjson refuses them
today, but bodies built in Python or by a laxer parser can carry them, and no upstream accepts them).
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from libs.errors import InvalidRequest

Rule = Callable[[Any, str], None]
Schema = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Required:
    """Marks a table entry as required (absent or null → missing_required_parameter)."""

    rule: Rule


Table = Mapping[str, Rule | Required]

# ---- errors and helpers -----------------------------------------------------------------------


# Keyed by exact type, so `True` is "a boolean", never "an integer" (bool subclasses int).
_KINDS = {type(None): "null", bool: "a boolean", int: "an integer", float: "a number", str: "a string",
          list: "an array", dict: "an object"}  # fmt: skip


def _show(value: object) -> str:
    if isinstance(value, str):
        return repr(value if len(value) <= 64 else value[:61] + "...")
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return repr(value)


def _type_error(value: object, path: str, expected: str) -> InvalidRequest:
    return InvalidRequest(
        f"Invalid type for '{path}': expected {expected}, but got {_KINDS.get(type(value), type(value).__name__)}.",
        param=path,
        code="invalid_type",
    )


def _value_error(path: str, message: str) -> InvalidRequest:
    return InvalidRequest(message, param=path, code="invalid_value")


def _missing(path: str) -> InvalidRequest:
    return InvalidRequest(f"Missing required parameter: '{path}'.", param=path, code="missing_required_parameter")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _expect(value: object, path: str, types: tuple[type, ...], expected: str) -> None:
    # Exact types: orjson yields plain dict/list/str/int/float/bool, and `type(True) is not int`.
    if type(value) not in types:
        raise _type_error(value, path, expected)


# id(table) -> (its rules with `Required` unwrapped, its required names); tables are built at
# import and live as long as the module
_COMPILED: dict[int, tuple[dict[str, Rule], tuple[str, ...]]] = {}


def _compiled(table: Table) -> tuple[dict[str, Rule], tuple[str, ...]]:
    compiled = _COMPILED.get(id(table))
    if compiled is None:
        rules = {name: entry.rule if isinstance(entry, Required) else entry for name, entry in table.items()}
        required = tuple(name for name, entry in table.items() if isinstance(entry, Required))
        compiled = _COMPILED[id(table)] = (rules, required)
    return compiled


def _check_fields(fields: Mapping[str, Any], table: Table, path: str) -> None:
    # A body names a few of a table's thirty-odd fields: check those it has, then the required
    # ones it lacks. Should anything be wrong, the table-order pass names the same first
    # violation whatever order the client wrote its fields in.
    rules, required = _compiled(table)
    try:
        for name, value in fields.items():
            rule = rules.get(name)
            if rule is not None and value is not None:
                rule(value, f"{path}.{name}" if path else name)
        for name in required:
            if fields.get(name) is None:
                raise _missing(_join(path, name))
    except InvalidRequest:
        _check_in_table_order(fields, table, path)
        raise


def _check_in_table_order(fields: Mapping[str, Any], table: Table, path: str) -> None:
    for name, entry in table.items():
        value = fields.get(name)
        if value is None:
            if isinstance(entry, Required):
                raise _missing(_join(path, name))
            continue
        (entry.rule if isinstance(entry, Required) else entry)(value, _join(path, name))


def _at_least(value: int, path: str, lo: int | None) -> None:
    if lo is not None and value < lo:
        raise _value_error(path, f"'{path}' must be at least {lo}, got {_show(value)}.")


# ---- schemas: what each rule accepts, as JSON Schema (draft 2020-12) --------------------------

# rule -> its schema; rules are built at import and live as long as the module
_SCHEMAS: dict[Rule, Schema] = {}


def described(rule: Rule, schema: Schema) -> Rule:
    _SCHEMAS[rule] = schema
    return rule


def schema_of(rule: Rule | Required) -> Schema:
    """The JSON Schema of the values `rule` accepts (a fresh copy: callers may extend it)."""
    return copy.deepcopy(_SCHEMAS[rule.rule if isinstance(rule, Required) else rule])


def table_schema(table: Table) -> Schema:
    """An object with the table's fields in its order; unknown fields are allowed (forwarded)."""
    schema: Schema = {"type": "object", "properties": {name: schema_of(entry) for name, entry in table.items()}}
    required = [name for name, entry in table.items() if isinstance(entry, Required)]
    if required:
        schema["required"] = required
    return schema


# ---- rule factories ---------------------------------------------------------------------------


def string(*, non_empty: bool = False) -> Rule:
    def check(value: Any, path: str) -> None:
        if type(value) is not str:  # the most common rule: _expect inlined
            raise _type_error(value, path, "a string")
        if non_empty and not value:
            raise _value_error(path, f"'{path}' must not be empty.")

    return described(check, {"type": "string", "minLength": 1} if non_empty else {"type": "string"})


def choice(*values: str) -> Rule:
    """A string among `values`: only for what the gateway acts on (it cannot act on a value it does
    not know); a forwarded field is a `string()`, whatever values OpenAI adds to it."""
    allowed = frozenset(values)
    listed = ", ".join(repr(v) for v in values)

    def check(value: Any, path: str) -> None:
        if type(value) is not str:
            raise _type_error(value, path, "a string")
        if value not in allowed:
            raise _value_error(path, f"'{path}' must be one of {listed}, got {_show(value)}.")

    return described(check, {"type": "string", "enum": list(values)})


def pattern(regex: str, expected: str) -> Rule:
    """A string matching `regex` whole; `expected` says what that is in the error message."""
    compiled = re.compile(regex)

    def check(value: Any, path: str) -> None:
        if type(value) is not str:
            raise _type_error(value, path, "a string")
        if compiled.fullmatch(value) is None:
            raise _value_error(path, f"'{path}' must be {expected}, got {_show(value)}.")

    # anchored: JSON Schema's `pattern` matches anywhere in the string
    return described(check, {"type": "string", "pattern": f"^(?:{regex})$"})


def boolean() -> Rule:
    return described(lambda value, path: _expect(value, path, (bool,), "a boolean"), {"type": "boolean"})


def integer(lo: int | None = None, hi: int | None = None) -> Rule:
    def check(value: Any, path: str) -> None:
        _expect(value, path, (int,), "an integer")  # 1.0 is rejected too, as OpenAI does
        _at_least(value, path, lo)
        if hi is not None and value > hi:
            raise _value_error(path, f"'{path}' must be at most {hi}, got {_show(value)}.")

    schema: Schema = {"type": "integer"}
    if lo is not None:
        schema["minimum"] = lo
    if hi is not None:
        schema["maximum"] = hi
    return described(check, schema)


def number() -> Rule:
    def check(value: Any, path: str) -> None:
        _expect(value, path, (int, float), "a number")
        if not math.isfinite(value):
            raise _value_error(path, f"'{path}' must be a finite number, got {_show(value)}.")

    return described(check, {"type": "number"})


def array(items: Rule | None = None, *, non_empty: bool = False) -> Rule:
    def check(value: Any, path: str) -> None:
        if type(value) is not list:  # `messages` and its objects, in every request: _expect inlined
            raise _type_error(value, path, "an array")
        if non_empty and not value:
            raise _value_error(path, f"'{path}' must not be empty.")
        if items is not None:
            for i, item in enumerate(value):
                items(item, f"{path}[{i}]")

    schema: Schema = {"type": "array"}
    if items is not None:
        schema["items"] = schema_of(items)
    if non_empty:
        schema["minItems"] = 1
    return described(check, schema)


def obj(table: Table | None = None) -> Rule:
    """A JSON object checked against `table`; unknown nested keys are tolerated."""

    def check(value: Any, path: str) -> None:
        if type(value) is not dict:
            raise _type_error(value, path, "an object")
        if table:
            _check_fields(value, table, path)

    return described(check, table_schema(table) if table else {"type": "object"})


def mapping(values: Rule) -> Rule:
    """An object with free-form keys (`logit_bias`); paths are `name.key`."""

    def check(value: Any, path: str) -> None:
        _expect(value, path, (dict,), "an object")
        for key, item in value.items():
            values(item, f"{path}.{key}")

    return described(check, {"type": "object", "additionalProperties": schema_of(values)})


def one_of(expected: str, by_type: Mapping[type, Rule]) -> Rule:
    """Dispatch on the JSON type (str / list / dict), e.g. `stop` is a string or an array."""

    def check(value: Any, path: str) -> None:
        rule = by_type.get(type(value))
        if rule is None:
            raise _type_error(value, path, expected)
        rule(value, path)

    return described(check, {"anyOf": [schema_of(rule) for rule in by_type.values()]})


def inputs(text: Rule, items_by_type: Mapping[type, Rule], *, max_items: int | None = None) -> Rule:
    """A string (`text`), or a non-empty array in one of several forms: the first element's JSON
    type picks its rule from `items_by_type`, and the rest must match it (`prompt`, `input`)."""
    expected = _alternatives(["a string", *(f"an array of {_FORMS[t]}" for t in items_by_type)])
    first_expected = _alternatives([_ITEM_KINDS[t] for t in items_by_type])

    def check(value: Any, path: str) -> None:
        if type(value) is str:
            text(value, path)
            return
        if type(value) is not list:
            raise _type_error(value, path, expected)
        if not value:
            raise _value_error(path, f"'{path}' must not be empty.")
        if max_items is not None and len(value) > max_items:
            raise _value_error(path, f"'{path}' must have at most {max_items} items, got {len(value)}.")
        items = items_by_type.get(type(value[0]))
        if items is None:
            raise _type_error(value[0], f"{path}[0]", first_expected)
        for i, item in enumerate(value):
            items(item, f"{path}[{i}]")

    arrays: list[Schema] = []
    for rule in items_by_type.values():
        form: Schema = {"type": "array", "items": schema_of(rule), "minItems": 1}
        if max_items is not None:
            form["maxItems"] = max_items
        arrays.append(form)
    return described(check, {"anyOf": [schema_of(text), *arrays]})


# how `inputs` names each array form and each first element in its messages
_FORMS = {str: "strings", int: "token ids", list: "token-id arrays", dict: "objects"}
_ITEM_KINDS = {str: "a string", int: "a token id", list: "an array of token ids", dict: "an object"}


def _alternatives(kinds: list[str]) -> str:
    return kinds[0] if len(kinds) == 1 else ", ".join(kinds[:-1]) + ", or " + kinds[-1]


# ---- shared rules -----------------------------------------------------------------------------

_STRING = string()
_STRINGS = array(_STRING)
_BOOL = boolean()
_INTEGER = integer()
_NUMBER = number()
_OBJECT = obj()
_OBJECTS = array(_OBJECT)
_MODEL = Required(string(non_empty=True))
_LOGIT_BIAS = mapping(_NUMBER)
_N = integer(lo=1)  # its upper bound is the gateway's MAX_N, passed in by the route (see `_validate`)
_STOP = one_of("a string or an array of strings", {str: _STRING, list: _STRINGS})
_STREAM_OPTIONS = obj({"include_usage": _BOOL})
_TYPED = obj({"type": _STRING})  # tools, tool_choice, response_format: whatever `type` OpenAI adds next

# ---- messages ---------------------------------------------------------------------------------

# A part's `text` is read by the worker (its usage estimate); everything else in a part is forwarded.
_CONTENT = one_of(
    "a string or an array of content parts", {str: _STRING, list: array(obj({"type": _STRING, "text": _STRING}))}
)
# Any role passes (OpenAI added `developer`); which fields a role needs is the upstream's to judge.
_MESSAGE = obj({
    "role": Required(_STRING),
    "content": _CONTENT,
    "name": _STRING,
    "refusal": _STRING,
    "tool_calls": _OBJECTS,
    "tool_call_id": _STRING,
    "function_call": _OBJECT,
    "audio": _OBJECT,
})

# ---- completions prompt -----------------------------------------------------------------------

_TOKEN = integer(lo=0)
_TOKENS = array(_TOKEN, non_empty=True)
_prompt = inputs(_STRING, {str: _STRING, int: _TOKEN, list: _TOKENS})


# ---- field tables -----------------------------------------------------------------------------

CHAT_FIELDS: Table = {
    "model": _MODEL,
    "messages": Required(array(_MESSAGE, non_empty=True)),
    "store": _BOOL,
    "reasoning_effort": _STRING,
    "metadata": _OBJECT,
    "frequency_penalty": _NUMBER,
    "presence_penalty": _NUMBER,
    "logit_bias": _LOGIT_BIAS,
    "logprobs": _BOOL,
    "top_logprobs": _INTEGER,
    "max_tokens": _INTEGER,
    "max_completion_tokens": _INTEGER,
    "n": _N,
    "modalities": _STRINGS,
    "prediction": _OBJECT,
    "audio": _OBJECT,
    "response_format": _TYPED,
    "seed": _INTEGER,
    "service_tier": _STRING,
    "stop": _STOP,
    "stream": _BOOL,
    "stream_options": _STREAM_OPTIONS,
    "temperature": _NUMBER,
    "top_p": _NUMBER,
    "tools": array(_TYPED),
    "tool_choice": one_of("a string or an object", {str: _STRING, dict: _TYPED}),
    "parallel_tool_calls": _BOOL,
    "user": _STRING,
    "function_call": one_of("a string or an object", {str: _STRING, dict: _OBJECT}),
    "functions": _OBJECTS,
}

COMPLETION_FIELDS: Table = {
    "model": _MODEL,
    "prompt": Required(_prompt),
    "best_of": _INTEGER,
    "echo": _BOOL,
    "frequency_penalty": _NUMBER,
    "presence_penalty": _NUMBER,
    "logit_bias": _LOGIT_BIAS,
    "logprobs": _INTEGER,  # an integer here (top-k), unlike chat's boolean
    "max_tokens": _INTEGER,
    "n": _N,
    "seed": _INTEGER,
    "stop": _STOP,
    "stream": _BOOL,
    "stream_options": _STREAM_OPTIONS,
    "suffix": _STRING,
    "temperature": _NUMBER,
    "top_p": _NUMBER,
    "user": _STRING,
}

# ---- embeddings -------------------------------------------------------------------------------

MAX_EMBEDDING_INPUTS = 2048  # OpenAI's limit: each input becomes part of a job, so the edge judges it
_NON_EMPTY_STRING = string(non_empty=True)

EMBEDDING_FIELDS: Table = {
    "input": Required(inputs(
        _NON_EMPTY_STRING, {str: _NON_EMPTY_STRING, int: _TOKEN, list: _TOKENS}, max_items=MAX_EMBEDDING_INPUTS
    )),
    "model": _MODEL,
    "dimensions": integer(lo=1),
    "encoding_format": choice("float", "base64"),  # the worker encodes the vectors
    "user": _STRING,
}

# ---- images -----------------------------------------------------------------------------------

MAX_IMAGES = 10  # OpenAI's bound on `n`; the gateway's MAX_N may lower it (see validate_image_request)
# `1024x1024`, and `1024*1024` as seed 004 writes it; `auto` lets the model choose
IMAGE_SIZE = pattern(r"auto|[1-9][0-9]*[x*][1-9][0-9]*", "'auto' or a size like '1024x1024' or '1024*1024'")

IMAGE_FIELDS: Table = {
    "prompt": Required(_NON_EMPTY_STRING),
    "background": _STRING,
    "model": _MODEL,  # OpenAI defaults it to dall-e-2; the edge routes by it, so it must be named
    "moderation": _STRING,
    "n": integer(lo=1, hi=MAX_IMAGES),
    "output_compression": _INTEGER,
    "output_format": _STRING,
    "quality": _STRING,
    "response_format": choice("url", "b64_json"),  # a url image is stored and served by the gateway
    "size": IMAGE_SIZE,
    "style": _STRING,
    "user": _STRING,
}

# ---- moderations ------------------------------------------------------------------------------

# multimodal parts: `{"type": "text", "text": ...}` or `{"type": "image_url", "image_url": {"url": ...}}`;
# which types exist is the upstream's to judge
_MODERATION_PART = obj({"type": Required(_STRING), "text": _STRING, "image_url": obj({"url": Required(_STRING)})})

MODERATION_FIELDS: Table = {
    "input": Required(inputs(_STRING, {str: _STRING, dict: _MODERATION_PART})),
    "model": _STRING,
}

# ---- cross-field constraints ------------------------------------------------------------------

Constraint = Callable[[Mapping[str, Any]], None]


# constraint -> the JSON Schema keywords that say it (merged into the body's schema); one
# JSON Schema cannot say (`best_of >= n`) is described in words instead
_CONSTRAINT_SCHEMAS: dict[Constraint, Schema] = {}


def _needs_true(field: str, flag: str) -> Constraint:
    def check(body: Mapping[str, Any]) -> None:
        if body.get(field) is not None and body.get(flag) is not True:
            raise _value_error(field, f"'{field}' is only allowed when '{flag}' is true.")

    _CONSTRAINT_SCHEMAS[check] = {"dependentSchemas": {field: {
        "properties": {flag: {"const": True}}, "required": [flag],
    }}}
    return check


def _best_of_covers_n(body: Mapping[str, Any]) -> None:
    best_of, n = body.get("best_of"), body.get("n")
    if best_of is not None and n is not None and best_of < n:
        message = f"'best_of' must be greater than or equal to 'n', got best_of={best_of} and n={n}."
        raise _value_error("best_of", message)


_CONSTRAINT_SCHEMAS[_best_of_covers_n] = {"description": "`best_of`, when given with `n`, must be at least `n`."}


# The worker rewrites `stream_options`, and a fan-out sends each job `n=1`: the upstream never
# sees what these two judge, so the edge does.
_CHAT_CONSTRAINTS: tuple[Constraint, ...] = (_needs_true("stream_options", "stream"),)
_COMPLETION_CONSTRAINTS: tuple[Constraint, ...] = (_needs_true("stream_options", "stream"), _best_of_covers_n)


def _too_many_choices(n: int, max_n: int) -> InvalidRequest:
    return InvalidRequest(
        f"'n' asks for {n} choices; this gateway allows at most {max_n} per request (MAX_N).",
        param="n", code="invalid_value",
    )


def _validate(body: object, table: Table, constraints: tuple[Constraint, ...], max_n: int | None) -> list[str]:
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", param=None, code="invalid_type")
    _check_fields(body, table, "")
    for constraint in constraints:
        constraint(body)
    # before any planning: a fan-out builds one job per choice
    n = body.get("n")
    if max_n is not None and n is not None and n > max_n:
        raise _too_many_choices(n, max_n)
    return [key for key in body if key not in table]


def validate_chat_request(body: object, *, max_n: int | None = None) -> list[str]:
    """Raise `InvalidRequest` for the first violation; return the unknown top-level field names
    (forwarded as they are). `max_n`: the gateway's MAX_N, the most choices `n` may ask for."""
    return _validate(body, CHAT_FIELDS, _CHAT_CONSTRAINTS, max_n)


def validate_completion_request(body: object, *, max_n: int | None = None) -> list[str]:
    """As `validate_chat_request`; the route checks `n` times the prompts against MAX_N once planned."""
    return _validate(body, COMPLETION_FIELDS, _COMPLETION_CONSTRAINTS, max_n)


def validate_embedding_request(body: object) -> list[str]:
    """Raise `InvalidRequest` for the first violation; return the unknown top-level field names."""
    return _validate(body, EMBEDDING_FIELDS, (), None)


def validate_image_request(body: object, *, max_n: int) -> list[str]:
    """As `validate_embedding_request`; `n` may ask for at most min(10, `max_n`) images."""
    return _validate(body, IMAGE_FIELDS, (), max_n)


def validate_moderation_request(body: object) -> list[str]:
    """As `validate_embedding_request`."""
    return _validate(body, MODERATION_FIELDS, (), None)


# ---- the request bodies, as JSON Schema ---------------------------------------------------------

# endpoint kind -> its table and cross-field constraints: what the OpenAPI document describes
BODIES: dict[str, tuple[Table, tuple[Constraint, ...]]] = {
    "chat": (CHAT_FIELDS, _CHAT_CONSTRAINTS),
    "completion": (COMPLETION_FIELDS, _COMPLETION_CONSTRAINTS),
    "embedding": (EMBEDDING_FIELDS, ()),
    "image": (IMAGE_FIELDS, ()),
    "moderation": (MODERATION_FIELDS, ()),
}


def body_schema(kind: str, *, max_n: int | None = None) -> Schema:
    """The JSON Schema of a request body of `kind` (a key of BODIES), generated from the table the
    edge validates it with, its cross-field constraints merged in; `max_n`: the gateway's MAX_N,
    the bound `validate_*_request` puts on `n`."""
    table, constraints = BODIES[kind]
    schema = table_schema(table)
    n = schema["properties"].get("n")
    if n is not None and max_n is not None:
        n["maximum"] = min(n.get("maximum", max_n), max_n)
    notes: list[str] = []
    for constraint in constraints:
        for key, value in copy.deepcopy(_CONSTRAINT_SCHEMAS[constraint]).items():
            if key == "description":
                notes.append(value)
            else:
                schema.setdefault(key, {}).update(value)
    if notes:
        schema["description"] = " ".join(notes)
    return schema
