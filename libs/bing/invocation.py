"""The `type:4` chat invocation SydneyQt sends (fact sheet sydney.md §2.4-2.7), built without I/O.

Fields are in SydneyQt's Go struct order (Go's encoder keeps it; orjson keeps dict order), so the
record compares field by field with the sheet's §2.7 example. Two deliberate differences from
SydneyQt: `message.messageType` is always "Chat" (SydneyQt picks "Chat" or
"CurrentWebpageContextRequest" at random), and the style/option logic reads a request instead of
a process-wide client (no `debug_options_sets.json` override).
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from typing import Any

from libs.bing.conversation import Conversation

STYLES = ("Creative", "Balanced", "Precise", "Designer")

# SydneyQt HEAD's base list (sydney/sydney.go), always first and in this order.
BASE_OPTIONS_SETS = (
    "fluxcopilot", "nojbf", "iyxapbing", "iycapbing", "dgencontentv3", "nointernalsugg", "disable_telemetry",
    "machine_affinity", "streamf", "langdtwb", "fdwtlst", "fluxprod", "eredirecturl", "gptvnodesc", "gptvnoex",
    "codeintfile", "sdretrieval", "gamaxinvoc", "ldsummary", "ldqa",
)  # fmt: skip
_STYLE_OPTIONS_SETS = {"Balanced": ("galileo", "gldcl1p"), "Precise": ("h3precise",)}


@dataclass(frozen=True, slots=True)
class _Plugin:
    options_sets: tuple[str, ...]
    id: str
    category: int


# sydney/plugins.go: the only plugin SydneyQt knows. Unknown names are skipped.
PLUGINS = {"Suno": _Plugin(("014CB21D",), "c310c353-b9f0-4d76-ab0d-1dd5e979cf68", 1)}

ALLOWED_MESSAGE_TYPES = (
    "ActionRequest", "Chat", "Context", "InternalSearchQuery", "InternalSearchResult", "InternalLoaderMessage",
    "Progress", "GenerateContentQuery", "SearchQuery", "GeneratedCode",
)  # fmt: skip
# SydneyQt's fixed location (Los Angeles); `location` is its Go `%.6f` rendering of the centre.
LOCATION = "lat:33.975700;long:-118.256401;re=1000m;"
LOCATION_HINT: dict[str, Any] = {
    "SourceType": 1,
    "RegionType": 2,
    "Center": {"Latitude": 33.97570037841797, "Longitude": -118.25640106201172},
    "Radius": 24902,
    "Name": "Los Angeles, California",
    "Accuracy": 24902,
    "FDConfidence": 0.5,
    "CountryName": "United States",
    "CountryConfidence": 8,
    "Admin1Name": "California",
    "PopulatedPlaceName": "Los Angeles",
    "PopulatedPlaceConfidence": 5,
    "PostCodeName": "90060",
    "UtcOffset": -8,
    "Dma": 803,
}


@dataclass(frozen=True, slots=True)
class ChatRequest:
    prompt: str
    context: str = ""  # the web-page context blob: chat history and instructions (§2.6)
    image_url: str | None = None  # a kblob URL (§6) or any image URL
    no_search: bool = False
    style: str = "Creative"
    gpt4turbo: bool = False
    classic: bool = False
    plugins: tuple[str, ...] = ()
    locale: str = "en-US"


def options_sets(request: ChatRequest) -> tuple[list[str], list[dict[str, Any]] | None, str, str]:
    """(optionsSets, plugins or None, tone, gptId) exactly as SydneyQt HEAD's NewSydney (§2.5).

    `plugins` is None, not [], when no known plugin is selected: SydneyQt sends a nil Go slice,
    which encodes as `null`. `nosearchall` looks at the requested plugin NAMES, known or not."""
    sets = list(BASE_OPTIONS_SETS)
    style = request.style or "Creative"
    tone, gpt_id = "Creative", "copilot"
    if style == "Creative":
        tone = "CreativeClassic" if request.classic else "Creative"
    elif style == "Designer":
        sets.append("ai_persona_designer_gpt")
        gpt_id = "designer"
    elif style in _STYLE_OPTIONS_SETS:
        sets.extend(_STYLE_OPTIONS_SETS[style])
        tone = style
    # any other style falls back to Creative (SydneyQt logs a warning), classic ignored
    if request.no_search and not request.plugins:
        sets.append("nosearchall")
    if request.gpt4turbo and not request.classic:
        sets.append("gpt4tmncnp")
    plugins: list[dict[str, Any]] | None = None
    for name in request.plugins:
        plugin = PLUGINS.get(name)
        if plugin is None:
            continue
        sets.extend(plugin.options_sets)
        if plugins is None:
            plugins = []
        plugins.append({"id": plugin.id, "category": plugin.category})
    return sets, plugins, tone, gpt_id


def build_invocation(
    request: ChatRequest,
    conversation: Conversation,
    *,
    start_of_session: bool = True,
    invocation_id: str = "0",
) -> dict[str, Any]:
    """The `{"arguments":[...],"invocationId","target":"chat","type":4}` record, ready for
    `signalr.encode`. traceId, requestId and messageId are fresh per call."""
    sets, plugins, tone, gpt_id = options_sets(request)
    message_id = str(uuid.uuid4())
    locale = request.locale or "en-US"
    argument = {
        "optionsSets": sets,
        "source": "cib-ccp",
        "allowedMessageTypes": list(ALLOWED_MESSAGE_TYPES),
        "sliceIds": [],
        "verbosity": "verbose",
        "scenario": "SERP",
        "plugins": plugins,
        "traceId": secrets.token_hex(16),
        "requestId": message_id,
        "isStartOfSession": start_of_session,
        "message": {
            "locale": locale,
            "market": locale,
            "region": "US",
            "location": LOCATION,
            "locationHints": [{**LOCATION_HINT, "Center": dict(LOCATION_HINT["Center"])}],
            "attachedFilesInfos": None,
            "author": "user",
            "inputMethod": "Keyboard",
            "text": request.prompt,
            "messageType": "Chat",
            "requestId": message_id,
            "messageId": message_id,
            "imageUrl": request.image_url or None,
        },
        "tone": tone,
        "conversationSignature": conversation.signature or None,
        "participant": {"id": conversation.client_id},
        "spokenTextMode": "None",
        "conversationId": conversation.conversation_id,
        # always one entry, even for an empty context (§2.6)
        "previousMessages": [
            {
                "author": "user",
                "description": request.context,
                "contextType": "WebPage",
                "messageType": "Context",
                "hiddenText": "",
            }
        ],
        "gptId": gpt_id,
    }
    return {"arguments": [argument], "invocationId": invocation_id, "target": "chat", "type": 4}
