"""The type:4 chat invocation and its option sets (sydney.md §2.4-2.7, SydneyQt HEAD)."""

from __future__ import annotations

import re
import uuid
from typing import Any

import orjson
import pytest

from libs.bing.conversation import Conversation
from libs.bing.invocation import STYLES, ChatRequest, build_invocation, options_sets

BASE = [
    "fluxcopilot", "nojbf", "iyxapbing", "iycapbing", "dgencontentv3", "nointernalsugg", "disable_telemetry",
    "machine_affinity", "streamf", "langdtwb", "fdwtlst", "fluxprod", "eredirecturl", "gptvnodesc", "gptvnoex",
    "codeintfile", "sdretrieval", "gamaxinvoc", "ldsummary", "ldqa",
]  # fmt: skip
SUNO = {"id": "c310c353-b9f0-4d76-ab0d-1dd5e979cf68", "category": 1}
CONVERSATION = Conversation(
    conversation_id="51D|BingProd|abc",
    client_id="914800962251629",
    signature=None,
    sec_access_token="tok+/=",
    bearer_token="bearer",
)

# §2.7, verbatim from the sheet, with its elided values filled in and the three random ids as
# placeholders (TRACE, MSG).
EXAMPLE = (
    '{"arguments":[{"optionsSets":["fluxcopilot","nojbf","iyxapbing","iycapbing","dgencontentv3","nointernalsugg",'
    '"disable_telemetry","machine_affinity","streamf","langdtwb","fdwtlst","fluxprod","eredirecturl","gptvnodesc",'
    '"gptvnoex","codeintfile","sdretrieval","gamaxinvoc","ldsummary","ldqa","nosearchall","gpt4tmncnp"],'
    '"source":"cib-ccp",'
    '"allowedMessageTypes":["ActionRequest","Chat","Context","InternalSearchQuery","InternalSearchResult",'
    '"InternalLoaderMessage","Progress","GenerateContentQuery","SearchQuery","GeneratedCode"],'
    '"sliceIds":[],"verbosity":"verbose","scenario":"SERP","plugins":null,'
    '"traceId":"TRACE","requestId":"MSG","isStartOfSession":true,'
    '"message":{"locale":"en-US","market":"en-US","region":"US","location":"lat:33.975700;long:-118.256401;re=1000m;",'
    '"locationHints":[{"SourceType":1,"RegionType":2,"Center":{"Latitude":33.97570037841797,'
    '"Longitude":-118.25640106201172},"Radius":24902,"Name":"Los Angeles, California","Accuracy":24902,'
    '"FDConfidence":0.5,"CountryName":"United States","CountryConfidence":8,"Admin1Name":"California",'
    '"PopulatedPlaceName":"Los Angeles","PopulatedPlaceConfidence":5,"PostCodeName":"90060","UtcOffset":-8,'
    '"Dma":803}],'
    '"attachedFilesInfos":null,"author":"user","inputMethod":"Keyboard","text":"How are you?",'
    '"messageType":"Chat","requestId":"MSG","messageId":"MSG","imageUrl":null},'
    '"tone":"Creative","conversationSignature":null,"participant":{"id":"914800962251629"},'
    '"spokenTextMode":"None","conversationId":"51D|BingProd|abc",'
    '"previousMessages":[{"author":"user","description":"\\n\\n[system](#instructions)\\nYou are Sydney.'
    '\\n\\n[user](#message)\\nHello!\\n\\n[assistant](#message)\\nHi!","contextType":"WebPage",'
    '"messageType":"Context","hiddenText":""}],'
    '"gptId":"copilot"}],'
    '"invocationId":"0","target":"chat","type":4}'
)
CONTEXT = "\n\n[system](#instructions)\nYou are Sydney.\n\n[user](#message)\nHello!\n\n[assistant](#message)\nHi!"


def placeholders(record: dict[str, Any]) -> dict[str, Any]:
    argument = record["arguments"][0]
    trace, message_id = argument["traceId"], argument["requestId"]
    assert re.fullmatch(r"[0-9a-f]{32}", trace)
    assert str(uuid.UUID(message_id)) == message_id
    assert argument["message"]["requestId"] == argument["message"]["messageId"] == message_id
    text = orjson.dumps(record).decode().replace(trace, "TRACE").replace(message_id, "MSG")
    return orjson.loads(text)


def test_webapi_invocation_equals_the_sheet_example_field_for_field_in_order() -> None:
    request = ChatRequest("How are you?", context=CONTEXT, no_search=True, gpt4turbo=True)
    record = placeholders(build_invocation(request, CONVERSATION))
    assert orjson.dumps(record).decode() == EXAMPLE


def test_ids_are_fresh_per_call() -> None:
    one = build_invocation(ChatRequest("x"), CONVERSATION)["arguments"][0]
    two = build_invocation(ChatRequest("x"), CONVERSATION)["arguments"][0]
    assert one["traceId"] != two["traceId"]
    assert one["requestId"] != two["requestId"]


def test_message_type_is_always_chat() -> None:
    for _ in range(20):
        assert build_invocation(ChatRequest("x"), CONVERSATION)["arguments"][0]["message"]["messageType"] == "Chat"


def test_empty_context_still_sends_one_webpage_entry() -> None:
    previous = build_invocation(ChatRequest("x"), CONVERSATION)["arguments"][0]["previousMessages"]
    assert previous == [
        {"author": "user", "description": "", "contextType": "WebPage", "messageType": "Context", "hiddenText": ""}
    ]


def test_image_signature_locale_session_and_invocation_id() -> None:
    conversation = Conversation("c", "p", "sig", sec_access_token="", bearer_token=None)
    request = ChatRequest("x", image_url="https://www.bing.com/images/blob?bcid=B", locale="de-DE")
    record = build_invocation(request, conversation, start_of_session=False, invocation_id="3")
    argument = record["arguments"][0]
    assert record["invocationId"] == "3"
    assert argument["isStartOfSession"] is False
    assert argument["conversationSignature"] == "sig"
    assert argument["message"]["imageUrl"] == "https://www.bing.com/images/blob?bcid=B"
    assert (argument["message"]["locale"], argument["message"]["market"], argument["message"]["region"]) == (
        "de-DE",
        "de-DE",
        "US",
    )
    assert build_invocation(ChatRequest("x", image_url=""), conversation)["arguments"][0]["message"]["imageUrl"] is None


def test_the_shared_location_hint_is_not_aliased_between_invocations() -> None:
    one = build_invocation(ChatRequest("x"), CONVERSATION)
    one["arguments"][0]["message"]["locationHints"][0]["Center"]["Latitude"] = 0
    two = build_invocation(ChatRequest("x"), CONVERSATION)
    assert two["arguments"][0]["message"]["locationHints"][0]["Center"]["Latitude"] == 33.97570037841797


@pytest.mark.parametrize(
    ("style", "classic", "extra", "tone", "gpt_id"),
    [
        ("Creative", False, [], "Creative", "copilot"),
        ("Creative", True, [], "CreativeClassic", "copilot"),
        ("", False, [], "Creative", "copilot"),
        ("", True, [], "CreativeClassic", "copilot"),
        ("Balanced", False, ["galileo", "gldcl1p"], "Balanced", "copilot"),
        ("Balanced", True, ["galileo", "gldcl1p"], "Balanced", "copilot"),
        ("Precise", False, ["h3precise"], "Precise", "copilot"),
        ("Designer", False, ["ai_persona_designer_gpt"], "Creative", "designer"),
        ("Designer", True, ["ai_persona_designer_gpt"], "Creative", "designer"),
        ("Imaginative", False, [], "Creative", "copilot"),  # unknown: Creative, classic ignored
        ("Imaginative", True, [], "Creative", "copilot"),
    ],
)
def test_every_style(style: str, classic: bool, extra: list[str], tone: str, gpt_id: str) -> None:
    assert options_sets(ChatRequest("x", style=style, classic=classic)) == (BASE + extra, None, tone, gpt_id)


def test_styles_constant() -> None:
    assert STYLES[:3] == ("Creative", "Balanced", "Precise")
    for style in STYLES:
        assert options_sets(ChatRequest("x", style=style))[2] in ("Creative", "Balanced", "Precise")


def test_no_search_without_plugins_adds_nosearchall() -> None:
    sets, plugins, _, _ = options_sets(ChatRequest("x", no_search=True))
    assert sets == [*BASE, "nosearchall"]
    assert plugins is None


def test_no_search_with_a_plugin_does_not_add_nosearchall() -> None:
    sets, plugins, _, _ = options_sets(ChatRequest("x", no_search=True, plugins=("Suno",)))
    assert sets == [*BASE, "014CB21D"]
    assert plugins == [SUNO]


def test_no_search_with_only_an_unknown_plugin_still_skips_nosearchall() -> None:
    # SydneyQt looks at the requested names, known or not
    sets, plugins, _, _ = options_sets(ChatRequest("x", no_search=True, plugins=("Nope",)))
    assert sets == BASE
    assert plugins is None


@pytest.mark.parametrize("style", ["Creative", "Balanced", "Precise", "Designer"])
def test_gpt4turbo_is_added_for_any_style_unless_classic(style: str) -> None:
    assert options_sets(ChatRequest("x", style=style, gpt4turbo=True))[0][-1] == "gpt4tmncnp"
    assert "gpt4tmncnp" not in options_sets(ChatRequest("x", style=style, gpt4turbo=True, classic=True))[0]


def test_gpt4turbo_with_classic_creative() -> None:
    sets, _, tone, _ = options_sets(ChatRequest("x", gpt4turbo=True, classic=True))
    assert (sets, tone) == (BASE, "CreativeClassic")


def test_order_style_then_nosearch_then_gpt4_then_plugins() -> None:
    sets, plugins, tone, _ = options_sets(
        ChatRequest("x", style="Balanced", no_search=True, gpt4turbo=True, plugins=("Nope", "Suno"))
    )
    assert sets == [*BASE, "galileo", "gldcl1p", "gpt4tmncnp", "014CB21D"]
    assert plugins == [SUNO]
    assert tone == "Balanced"
    sets, _, _, _ = options_sets(ChatRequest("x", style="Precise", no_search=True, gpt4turbo=True))
    assert sets == [*BASE, "h3precise", "nosearchall", "gpt4tmncnp"]


def test_suno_in_the_invocation() -> None:
    argument = build_invocation(ChatRequest("sing", plugins=("Suno",)), CONVERSATION)["arguments"][0]
    assert argument["plugins"] == [SUNO]
    assert argument["optionsSets"][-1] == "014CB21D"
