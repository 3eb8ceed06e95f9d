"""POST /v1/moderations: deterministic keyword scoring in OpenAI's exact response shape.

A category is flagged when one of its keywords starts a word of the input (case-insensitive); scores of
unflagged categories are tiny and stable, derived from a hash of the text, as real scores are never 0.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from . import directives
from .config import Settings
from .directives import Directives
from .parse import BadRequest, model_not_found
from .state import State

MAX_INPUTS = 2048
THRESHOLD = 0.5
# category -> keywords (each matches at the start of a word: "kill" also catches "killing")
KEYWORDS: dict[str, tuple[str, ...]] = {
    "harassment": ("idiot", "stupid", "loser", "worthless", "kill them", "kill you"),
    "harassment/threatening": ("kill you", "kill them", "hurt you", "i will find you", "you will pay"),
    "hate": ("subhuman", "vermin", "inferior race"),
    "hate/threatening": ("exterminate", "wipe them out"),
    "illicit": ("shoplift", "steal", "counterfeit", "hack into", "launder"),
    "illicit/violent": ("build a bomb", "make a bomb", "untraceable gun"),
    "self-harm": ("kill myself", "hurt myself", "suicide", "end my life", "cut myself"),
    "self-harm/intent": ("kill myself", "end my life", "want to die"),
    "self-harm/instructions": ("how to overdose", "how to cut myself"),
    "sexual": ("nude", "porn", "explicit sex", "erotic"),
    "sexual/minors": ("underage",),
    "violence": ("kill", "murder", "stab", "shoot", "attack", "bomb", "behead"),
    "violence/graphic": ("gore", "dismember", "disembowel", "blood everywhere"),
}
# categories the omni model also judges on images; the rest read text only
IMAGE_CATEGORIES = frozenset(
    {"self-harm", "self-harm/intent", "self-harm/instructions", "sexual", "violence", "violence/graphic"}
)
# the legacy text models predate these
OMNI_ONLY = frozenset({"illicit", "illicit/violent"})
_PATTERNS = {
    category: re.compile(r"\b(?:" + "|".join(re.escape(k) for k in words) + ")", re.IGNORECASE)
    for category, words in KEYWORDS.items()
}
_INVALID_INPUT = "'$.input' is invalid. Please check the API reference: https://platform.openai.com/docs/api-reference."


def is_omni(model: str) -> bool:
    return model.startswith("omni-")


@dataclass(slots=True)
class ModerationJob:
    model: str
    directive_text: str
    inputs: list[tuple[str, bool]]  # per result: its text and whether it carried an image


def _parts(parts: list[Any]) -> tuple[str, bool]:
    """A multimodal input (`{type: text}` / `{type: image_url}` parts): one result for all of them."""
    texts: list[str] = []
    image = False
    for part in parts:
        kind = part.get("type")
        if kind == "text" and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif kind == "image_url" and isinstance(part.get("image_url"), dict) and isinstance(
            part["image_url"].get("url"), str
        ):
            image = True
        else:
            raise BadRequest(_INVALID_INPUT, "input")
    return "\n".join(texts), image


def _inputs(raw: Any) -> list[tuple[str, bool]]:
    if isinstance(raw, str):
        return [(raw, False)]
    if not isinstance(raw, list) or not raw or len(raw) > MAX_INPUTS:
        raise BadRequest(_INVALID_INPUT, "input")
    if all(isinstance(item, str) for item in raw):
        return [(item, False) for item in raw]
    if all(isinstance(item, dict) for item in raw):
        return [_parts(raw)]
    raise BadRequest(_INVALID_INPUT, "input")


def job_parser(settings: Settings) -> Callable[[Any], ModerationJob]:
    served = frozenset(settings.moderation_models)
    default_model = settings.moderation_models[0]

    def parse(body: Any) -> ModerationJob:
        if not isinstance(body, dict):
            raise BadRequest("request body must be a JSON object")
        if "input" not in body:
            raise BadRequest("'input' is a required property", "input")
        model = body.get("model") or default_model
        if not isinstance(model, str):
            raise BadRequest("'model' must be a string", "model")
        inputs = _inputs(body["input"])
        if model not in served:
            raise model_not_found(model)
        if not is_omni(model) and any(image for _, image in inputs):
            raise BadRequest(f"Model {model} does not support image inputs.", "input")
        return ModerationJob(model, "\n".join(text for text, _ in inputs), inputs)

    return parse


def _score(text: str, category: str) -> float:
    hits = len(_PATTERNS[category].findall(text))
    if hits:
        return 1.0 - 0.05 * 0.1 ** (hits - 1)  # 0.95 for one hit, closer to 1 with more
    digest = hashlib.blake2b(category.encode() + b"\n" + text.encode(), digest_size=4).digest()
    return 1e-6 + int.from_bytes(digest, "big") / 2**32 * 1e-3  # stable and small, never exactly 0


def result(text: str, image: bool, omni: bool) -> dict[str, Any]:
    text = directives.strip(text)  # a `[sandbox ...]` bracket is no content to judge
    names = [c for c in KEYWORDS if omni or c not in OMNI_ONLY]
    scores = {c: _score(text, c) for c in names}
    categories = {c: scores[c] >= THRESHOLD for c in names}
    out: dict[str, Any] = {"flagged": any(categories.values()), "categories": categories, "category_scores": scores}
    if omni:
        out["category_applied_input_types"] = {
            c: (["text"] if text else []) + (["image"] if image and c in IMAGE_CATEGORIES else []) for c in names
        }
    return out


def answer(state: State, job: ModerationJob, d: Directives) -> bytes:
    omni = is_omni(job.model)
    results = [result(text, image, omni) for text, image in job.inputs]
    return orjson.dumps({"id": state.next_id("modr-"), "model": job.model, "results": results})
