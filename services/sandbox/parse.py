"""Validate an OpenAI request body into a `Job`: only the fields the sandbox acts on; the rest is ignored."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MAX_N = 128


class BadRequest(ValueError):
    """A request refused before any directive runs: a 400 by default, or e.g. a 404 model_not_found."""

    def __init__(self, message: str, param: str | None = None, status: int = 400, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status
        self.code = code


def model_not_found(model: str) -> BadRequest:
    """OpenAI's answer for a model the key cannot use (the routes that check their model list)."""
    message = f"The model `{model}` does not exist or you do not have access to it."
    return BadRequest(message, "model", status=404, code="model_not_found")


@dataclass(slots=True)
class Job:
    chat: bool
    model: str
    stream: bool
    include_usage: bool
    n: int
    prompts: list[str]  # chat: one entry, the whole conversation's text; completions: each prompt
    directive_text: str  # where directives are read: the last message, or the prompt(s)
    prompt_tokens: int
    max_tokens: int | None
    tool_name: str | None  # asked for by tool_choice (a `tool=` directive may override)
    has_tools: bool


def _content_text(content: Any) -> str:
    """Text of a message: a string, or the text parts of a content array (images etc. are skipped)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            part["text"] for part in content if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""  # None (assistant tool-call turns) and anything else


def _common(body: dict[str, Any]) -> tuple[str, bool, bool, int, int | None]:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("you must provide a model parameter", "model")
    stream = body.get("stream") is True
    options = body.get("stream_options")
    include_usage = stream and isinstance(options, dict) and options.get("include_usage") is True
    n = body.get("n")
    if n is None:
        n = 1
    elif type(n) is not int or not 1 <= n <= MAX_N:
        raise BadRequest(f"n must be an integer between 1 and {MAX_N}", "n")
    max_tokens = body.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_tokens")
    if max_tokens is not None and (type(max_tokens) is not int or max_tokens < 0):
        raise BadRequest("max_tokens must be a non-negative integer", "max_tokens")
    return model, stream, include_usage, n, max_tokens


def _tool_choice(body: dict[str, Any]) -> tuple[bool, str | None]:
    tools = body.get("tools")
    if not isinstance(tools, list) or not tools:
        return False, None
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        function = choice.get("function")
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            return True, function["name"]
    elif choice == "required":  # the model must call something: call the first tool
        first = tools[0]
        function = first.get("function") if isinstance(first, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            return True, function["name"]
    return True, None


def chat_job(body: Any) -> Job:
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty array", "messages")
    texts: list[str] = []
    words = 0
    for message in messages:
        if not isinstance(message, dict):
            raise BadRequest("each message must be an object", "messages")
        text = _content_text(message.get("content"))
        texts.append(text)
        words += len(text.split())
    model, stream, include_usage, n, max_tokens = _common(body)
    has_tools, tool_name = _tool_choice(body)
    return Job(
        chat=True,
        model=model,
        stream=stream,
        include_usage=include_usage,
        n=n,
        prompts=["\n".join(texts)],
        directive_text=texts[-1],
        prompt_tokens=words,
        max_tokens=max_tokens,
        tool_name=tool_name,
        has_tools=has_tools,
    )


def _prompts(prompt: Any) -> list[str]:
    """A string, a list of strings, or token arrays (list of ints, list of lists of ints)."""
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, str) for p in prompt):
            return prompt
        if all(type(t) is int for t in prompt):
            return [" ".join(map(str, prompt))]
        if all(isinstance(p, list) and all(type(t) is int for t in p) for p in prompt):
            return [" ".join(map(str, p)) for p in prompt]
    raise BadRequest("'prompt' must be a string or an array of strings", "prompt")


def completion_job(body: Any) -> Job:
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    if "prompt" not in body:
        raise BadRequest("you must provide a prompt parameter", "prompt")
    prompts = _prompts(body["prompt"])
    model, stream, include_usage, n, max_tokens = _common(body)
    return Job(
        chat=False,
        model=model,
        stream=stream,
        include_usage=include_usage,
        n=n,
        prompts=prompts,
        directive_text=prompts[0] if len(prompts) == 1 else "\n".join(prompts),
        prompt_tokens=sum(len(p.split()) for p in prompts),
        max_tokens=max_tokens,
        tool_name=None,
        has_tools=False,
    )
