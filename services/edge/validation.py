"""Request validation for /v1/chat/completions and /v1/completions, with OpenAI-style errors.

Each endpoint is one declarative FIELD TABLE (field name → rule, in the order of OpenAI's docs);
a rule is a function `(value, path) -> None` that raises `InvalidRequest` naming the exact path
(`messages[2].content`, `tools[0].function.name`, `logit_bias.50256`). Rules shared by both
endpoints are the same objects. Cross-field constraints (`top_logprobs` needs `logprobs`, ...)
run after the tables. An explicit `null` counts as absent everywhere, as OpenAI does for optional
fields; for a required one it is reported as missing.

JSON types are checked exactly: Python's `bool` is an `int`, but a JSON `true` is not a number;
`1.0` is not an integer (OpenAI rejects it); NaN/±Infinity are rejected too (orjson refuses them
today, but bodies built in Python or by a laxer parser can carry them, and no upstream accepts them).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from libs.errors import InvalidRequest

Rule = Callable[[Any, str], None]


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


def _range_check(value: float, path: str, lo: float | None, hi: float | None) -> None:
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        if lo is not None and hi is not None:
            bound = f"between {lo} and {hi}"
        else:
            bound = f"at least {lo}" if lo is not None else f"at most {hi}"
        raise _value_error(path, f"'{path}' must be {bound}, got {_show(value)}.")


# ---- rule factories ---------------------------------------------------------------------------


def string(
    *,
    enum: tuple[str, ...] = (),
    non_empty: bool = False,
    pattern: re.Pattern[str] | None = None,
    pattern_help: str = "",
) -> Rule:
    allowed = frozenset(enum)

    def check(value: Any, path: str) -> None:
        if type(value) is not str:  # the most common rule: _expect inlined
            raise _type_error(value, path, "a string")
        if allowed and value not in allowed:
            choices = ", ".join(repr(e) for e in enum)
            raise _value_error(path, f"Invalid value for '{path}': expected one of {choices}, but got {_show(value)}.")
        if non_empty and not value:
            raise _value_error(path, f"'{path}' must not be empty.")
        if pattern is not None and not pattern.fullmatch(value):
            raise _value_error(path, f"Invalid value for '{path}': {pattern_help}, but got {_show(value)}.")

    return check


def boolean() -> Rule:
    return lambda value, path: _expect(value, path, (bool,), "a boolean")


def integer(lo: int | None = None, hi: int | None = None) -> Rule:
    def check(value: Any, path: str) -> None:
        _expect(value, path, (int,), "an integer")  # 1.0 is rejected too, as OpenAI does
        _range_check(value, path, lo, hi)

    return check


def number(lo: float | None = None, hi: float | None = None) -> Rule:
    def check(value: Any, path: str) -> None:
        _expect(value, path, (int, float), "a number")
        if not math.isfinite(value):
            raise _value_error(path, f"'{path}' must be a finite number, got {_show(value)}.")
        _range_check(value, path, lo, hi)

    return check


def array(items: Rule | None = None, *, non_empty: bool = False, max_items: int | None = None) -> Rule:
    def check(value: Any, path: str) -> None:
        _expect(value, path, (list,), "an array")
        if non_empty and not value:
            raise _value_error(path, f"'{path}' must not be empty.")
        if max_items is not None and len(value) > max_items:
            raise _value_error(path, f"'{path}' must have at most {max_items} items, got {len(value)}.")
        if items is not None:
            for i, item in enumerate(value):
                items(item, f"{path}[{i}]")

    return check


def obj(table: Table | None = None) -> Rule:
    """A JSON object checked against `table`; unknown nested keys are tolerated."""

    def check(value: Any, path: str) -> None:
        _expect(value, path, (dict,), "an object")
        if table:
            _check_fields(value, table, path)

    return check


def mapping(values: Rule, *, key_pattern: re.Pattern[str] | None = None, key_help: str = "") -> Rule:
    """An object with free-form keys (`metadata`, `logit_bias`); paths are `name.key`."""

    def check(value: Any, path: str) -> None:
        _expect(value, path, (dict,), "an object")
        for key, item in value.items():
            sub = f"{path}.{key}"
            if key_pattern is not None and not key_pattern.fullmatch(key):
                raise _value_error(sub, f"Invalid key for '{sub}': {key_help}, but got {_show(key)}.")
            values(item, sub)

    return check


def tagged(variants: Mapping[str, Table], tag: str = "type") -> Rule:
    """An object whose `tag` picks which table applies to the rest (tools, content parts, ...)."""
    tag_table: Table = {tag: Required(string(enum=tuple(variants)))}

    def check(value: Any, path: str) -> None:
        _expect(value, path, (dict,), "an object")
        _check_fields(value, tag_table, path)
        _check_fields(value, variants[value[tag]], path)

    return check


def one_of(expected: str, by_type: Mapping[type, Rule]) -> Rule:
    """Dispatch on the JSON type (str / list / dict), e.g. `stop` is a string or an array."""

    def check(value: Any, path: str) -> None:
        rule = by_type.get(type(value))
        if rule is None:
            raise _type_error(value, path, expected)
        rule(value, path)

    return check


# ---- shared rules -----------------------------------------------------------------------------

_STRING = string()
_BOOL = boolean()
_OBJECT = obj()
_MODEL = Required(string(non_empty=True))
_PENALTY = number(-2, 2)
_LOGIT_BIAS = mapping(
    number(-100, 100), key_pattern=re.compile(r"[0-9]+"), key_help="keys must be token ids (strings of digits)"
)
_N = integer(1, 128)
_SEED = integer()
_STOP = one_of("a string or an array of strings", {str: _STRING, list: array(_STRING, max_items=4)})
_STREAM_OPTIONS = obj({"include_usage": _BOOL})
_TEMPERATURE = number(0, 2)
_TOP_P = number(0, 1)

_FUNCTION_NAME = string(
    pattern=re.compile(r"[a-zA-Z0-9_-]{1,64}"), pattern_help="expected 1 to 64 letters, digits, underscores or dashes"
)
_FUNCTION: Table = {"name": Required(_FUNCTION_NAME), "description": _STRING, "parameters": _OBJECT, "strict": _BOOL}
_NAMED = obj({"name": Required(_STRING)})

# ---- messages ---------------------------------------------------------------------------------

_ALL_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
# content part type → (its fields, the roles that may send it)
_PARTS: dict[str, tuple[Table, frozenset[str]]] = {
    "text": ({"text": Required(_STRING)}, _ALL_ROLES),
    "image_url": (
        {"image_url": Required(obj({"url": Required(_STRING), "detail": string(enum=("auto", "low", "high"))}))},
        frozenset({"user"}),
    ),
    "input_audio": (
        {"input_audio": Required(obj({"data": Required(_STRING), "format": Required(string(enum=("wav", "mp3")))}))},
        frozenset({"user"}),
    ),
    "file": (
        {"file": Required(obj({"file_data": _STRING, "file_id": _STRING, "filename": _STRING}))},
        frozenset({"user"}),
    ),
    "refusal": ({"refusal": Required(_STRING)}, frozenset({"assistant"})),
}
_PART_SHAPE = tagged({kind: fields for kind, (fields, _) in _PARTS.items()})


def _content(role: str) -> Rule:
    def part(value: Any, path: str) -> None:
        _PART_SHAPE(value, path)
        kind = value["type"]
        if role not in _PARTS[kind][1]:
            allowed = "/".join(sorted(_PARTS[kind][1]))
            raise _value_error(
                f"{path}.type",
                f"Invalid value for '{path}.type': '{kind}' content parts are only "
                f"allowed in {allowed} messages, not in {role} messages.",
            )

    return one_of("a string or an array of content parts", {str: _STRING, list: array(part, non_empty=True)})


_TOOL_CALL = tagged(
    {
        "function": {
            "id": Required(_STRING),
            "function": Required(obj({"name": Required(_STRING), "arguments": Required(_STRING)})),
        }
    }
)


def _message_table(role: str, **extra: Rule | Required) -> Table:
    # `content` is optional in the table; whether it may be absent is decided per message below.
    return {"content": _content(role), "name": _STRING, **extra}


_MESSAGE_TABLES: dict[str, Table] = {
    "system": _message_table("system"),
    "developer": _message_table("developer"),
    "user": _message_table("user"),
    "assistant": _message_table(
        "assistant",
        refusal=_STRING,
        tool_calls=array(_TOOL_CALL),
        function_call=obj({"name": Required(_STRING), "arguments": Required(_STRING)}),
        audio=obj({"id": Required(_STRING)}),
    ),
    "tool": _message_table("tool", tool_call_id=Required(_STRING)),
    "function": _message_table("function", name=Required(_STRING)),
}
_ROLE: Table = {"role": Required(string(enum=tuple(_MESSAGE_TABLES)))}


def _message(value: Any, path: str) -> None:
    _expect(value, path, (dict,), "an object")
    role = value.get("role")
    if type(role) is not str or role not in _MESSAGE_TABLES:
        _check_fields(value, _ROLE, path)  # names what is wrong with it
    # Only an assistant turn that calls a tool/function may omit its content.
    calls = role == "assistant" and (bool(value.get("tool_calls")) or value.get("function_call") is not None)
    if value.get("content") is None and not calls:
        raise _missing(f"{path}.content")
    _check_fields(value, _MESSAGE_TABLES[role], path)


# ---- completions prompt -----------------------------------------------------------------------

_TOKEN = integer(lo=0)
_PROMPT_ITEMS: dict[type, Rule] = {str: _STRING, int: _TOKEN, list: array(_TOKEN, non_empty=True)}
_PROMPT_EXPECTED = "a string, an array of strings, an array of token ids, or an array of token-id arrays"


def _prompt(value: Any, path: str) -> None:
    if isinstance(value, str):
        return
    if not isinstance(value, list):
        raise _type_error(value, path, _PROMPT_EXPECTED)
    if not value:
        raise _value_error(path, f"'{path}' must not be empty.")
    # The first element decides which of the three array forms this is; the rest must match it.
    items = _PROMPT_ITEMS.get(type(value[0]))
    if items is None:
        raise _type_error(value[0], f"{path}[0]", "a string, a token id, or an array of token ids")
    for i, item in enumerate(value):
        items(item, f"{path}[{i}]")


# ---- field tables -----------------------------------------------------------------------------

CHAT_FIELDS: Table = {
    "model": _MODEL,
    "messages": Required(array(_message, non_empty=True)),
    "store": _BOOL,
    "reasoning_effort": string(enum=("low", "medium", "high", "minimal")),
    "metadata": mapping(_STRING),
    "frequency_penalty": _PENALTY,
    "presence_penalty": _PENALTY,
    "logit_bias": _LOGIT_BIAS,
    "logprobs": _BOOL,
    "top_logprobs": integer(0, 20),
    "max_tokens": integer(lo=1),
    "max_completion_tokens": integer(lo=1),
    "n": _N,
    "modalities": array(_STRING),
    "prediction": _OBJECT,
    "audio": _OBJECT,
    "response_format": tagged(
        {
            "text": {},
            "json_object": {},
            "json_schema": {
                "json_schema": Required(
                    obj({"name": Required(_STRING), "description": _STRING, "schema": _OBJECT, "strict": _BOOL})
                )
            },
        }
    ),
    "seed": _SEED,
    "service_tier": _STRING,
    "stop": _STOP,
    "stream": _BOOL,
    "stream_options": _STREAM_OPTIONS,
    "temperature": _TEMPERATURE,
    "top_p": _TOP_P,
    "tools": array(tagged({"function": {"function": Required(obj(_FUNCTION))}})),
    "tool_choice": one_of(
        "a string or an object",
        {
            str: string(enum=("none", "auto", "required")),
            dict: tagged({"function": {"function": Required(_NAMED)}}),
        },
    ),
    "parallel_tool_calls": _BOOL,
    "user": _STRING,
    "function_call": one_of("a string or an object", {str: string(enum=("none", "auto")), dict: _NAMED}),
    "functions": array(obj(_FUNCTION)),
}

COMPLETION_FIELDS: Table = {
    "model": _MODEL,
    "prompt": Required(_prompt),
    "best_of": integer(1, 20),
    "echo": _BOOL,
    "frequency_penalty": _PENALTY,
    "presence_penalty": _PENALTY,
    "logit_bias": _LOGIT_BIAS,
    "logprobs": integer(0, 5),  # an integer here (top-k), unlike chat's boolean
    "max_tokens": integer(lo=0),
    "n": _N,
    "seed": _SEED,
    "stop": _STOP,
    "stream": _BOOL,
    "stream_options": _STREAM_OPTIONS,
    "suffix": _STRING,
    "temperature": _TEMPERATURE,
    "top_p": _TOP_P,
    "user": _STRING,
}

# ---- cross-field constraints ------------------------------------------------------------------

Constraint = Callable[[Mapping[str, Any]], None]


def _needs_true(field: str, flag: str) -> Constraint:
    def check(body: Mapping[str, Any]) -> None:
        if body.get(field) is not None and body.get(flag) is not True:
            raise _value_error(field, f"'{field}' is only allowed when '{flag}' is true.")

    return check


def _best_of_covers_n(body: Mapping[str, Any]) -> None:
    best_of, n = body.get("best_of"), body.get("n")
    if best_of is not None and n is not None and best_of < n:
        message = f"'best_of' must be greater than or equal to 'n', got best_of={best_of} and n={n}."
        raise _value_error("best_of", message)


_CHAT_CONSTRAINTS: tuple[Constraint, ...] = (
    _needs_true("top_logprobs", "logprobs"),
    _needs_true("stream_options", "stream"),
)
_COMPLETION_CONSTRAINTS: tuple[Constraint, ...] = (_needs_true("stream_options", "stream"), _best_of_covers_n)


def _validate(body: object, table: Table, constraints: tuple[Constraint, ...]) -> list[str]:
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", param=None, code="invalid_type")
    _check_fields(body, table, "")
    for constraint in constraints:
        constraint(body)
    return [key for key in body if key not in table]


def validate_chat_request(body: object) -> list[str]:
    """Raise `InvalidRequest` for the first violation; return the unknown top-level field names."""
    return _validate(body, CHAT_FIELDS, _CHAT_CONSTRAINTS)


def validate_completion_request(body: object) -> list[str]:
    """Raise `InvalidRequest` for the first violation; return the unknown top-level field names."""
    return _validate(body, COMPLETION_FIELDS, _COMPLETION_CONSTRAINTS)
