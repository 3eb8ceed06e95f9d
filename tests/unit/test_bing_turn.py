"""The sans-I/O turn reader on records written from the fact sheet (sydney.md §3-4), checked
against SydneyQt's AskStream semantics and payloads."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from libs.bing.turn import SydneyEvent, TurnEnd, TurnFailed, TurnItem, TurnReader

BASE = "https://www.bing.com"


def records(frame: str) -> list[dict[str, Any]]:
    """A websocket frame's records, split here by hand (not with libs.bing.signalr)."""
    return [orjson.loads(piece) for piece in frame.split("\x1e") if piece]


def run(*frames: str, reader: TurnReader | None = None) -> list[TurnItem]:
    reader = reader or TurnReader(BASE)
    items: list[TurnItem] = []
    for frame in frames:
        for record in records(frame):
            items.extend(reader.feed(record))
    return items


def bot(text: str, *, cursor: str | None = None, card: str | None = None, **extra: Any) -> str:
    message = {
        "text": text,
        "author": "bot",
        "messageId": cursor or "B1",
        "adaptiveCards": [
            {
                "type": "AdaptiveCard",
                "version": "1.0",
                "body": [{"type": "TextBlock", "text": card if card is not None else text, "wrap": True}],
            }
        ],
        "contentOrigin": "DeepLeo",
        **extra,
    }
    argument: dict[str, Any] = {"messages": [message], "requestId": "R"}
    if cursor is not None:
        argument = {"cursor": {"j": f"$['{cursor}'].adaptiveCards[0].body[0].text", "p": -1}, **argument}
    return orjson.dumps({"type": 1, "target": "update", "arguments": [argument]}).decode() + "\x1e"


def typed(message: dict[str, Any]) -> str:
    return (
        orjson.dumps({"type": 1, "target": "update", "arguments": [{"messages": [message], "requestId": "R"}]}).decode()
        + "\x1e"
    )


THROTTLING = (
    '{"type":1,"target":"update","arguments":[{"requestId":"R","throttling":'
    '{"maxNumUserMessagesInConversation":30,"numUserMessagesInConversation":1}}]}\x1e'
)
SUCCESS = (
    '{"type":2,"invocationId":"0","item":{"messages":[{"text":"Hi","author":"user"},'
    '{"text":"Hello!","author":"bot","messageId":"B1","contentOrigin":"DeepLeo",'
    '"suggestedResponses":[{"text":"Hi again","messageType":"Suggestion"}]}],'
    '"firstNewMessageIndex":1,"conversationId":"C","requestId":"R",'
    '"throttling":{"maxNumUserMessagesInConversation":30,"numUserMessagesInConversation":1},'
    '"result":{"value":"Success","message":"Hello!"}}}\x1e{"type":3,"invocationId":"0"}\x1e'
)


def msg(text: str) -> SydneyEvent:
    return SydneyEvent("message", text)


def test_section_4_happy_path() -> None:
    frames = [
        THROTTLING,
        '{"type":1,"target":"update","arguments":[{"cursor":{"j":"$[\'B1\'].adaptiveCards[0].body[0].text","p":-1},'
        '"messages":[{"text":"Hel","author":"bot","messageId":"B1","adaptiveCards":[{"type":"AdaptiveCard",'
        '"version":"1.0","body":[{"type":"TextBlock","text":"Hel","wrap":true}]}],"contentOrigin":"DeepLeo"}],'
        '"requestId":"R"}]}\x1e',
        '{"type":1,"target":"update","arguments":[{"messages":[{"text":"Hello!","author":"bot","messageId":"B1",'
        '"adaptiveCards":[{"type":"AdaptiveCard","version":"1.0","body":[{"type":"TextBlock","text":"Hello!",'
        '"wrap":true}]}],"contentOrigin":"DeepLeo"}],"requestId":"R"}]}\x1e',
        SUCCESS,
    ]
    reader = TurnReader(BASE)
    assert not reader.sent_text
    assert run(*frames, reader=reader) == [
        msg("Hel"),
        msg("lo!"),
        SydneyEvent("suggested_responses", '["Hi again"]'),
        TurnEnd(["Hi again"], {"maxNumUserMessagesInConversation": 30, "numUserMessagesInConversation": 1}),
    ]
    assert reader.sent_text
    assert reader.done
    assert reader.feed({"type": 1, "arguments": [{"messages": [{"text": "late"}]}]}) == []


def test_pings_and_unknown_types_are_ignored() -> None:
    assert run('{"type":6}\x1e{"type":99}\x1e{"type":1,"arguments":[]}\x1e{"type":1}\x1e') == []
    assert run('{"type":1,"arguments":[{"messages":[]}]}\x1e{"type":1,"arguments":[{"messages":["x"]}]}\x1e') == []


def test_cursor_resets_so_a_second_message_is_emitted_whole() -> None:
    items = run(bot("First answer", cursor="B1"), bot("Second", cursor="B2"), bot("Second one", card="Second one"))
    assert items == [msg("First answer"), msg("Second"), msg(" one")]


def test_a_second_message_without_cursor_loses_its_start() -> None:
    # Without a cursor, "Second" counts as the first message shrinking: nothing is emitted and
    # only what grows past it follows (SydneyQt's counter; why a fake must send the cursor).
    items = run(bot("First answer", cursor="B1"), bot("Second"), bot("Second message!"))
    assert items == [msg("First answer"), msg(" message!")]


def test_two_messages_each_with_suggestions() -> None:
    suggestion = [{"text": "More", "author": "user", "messageType": "Suggestion"}, {"text": "Thanks"}]
    items = run(bot("A", cursor="B1"), bot("AB", suggestedResponses=suggestion), bot("C", cursor="B2"))
    assert items == [msg("A"), msg("B"), SydneyEvent("suggested_responses", '["More","Thanks"]'), msg("C")]


def test_shrinking_text_emits_nothing_and_moves_the_counter_back() -> None:
    items = run(bot("Hello world", cursor="B1"), bot("Hello"), bot("Hello"), bot("Hello there"))
    assert items == [msg("Hello world"), msg(" there")]


def test_code_points_not_bytes() -> None:
    assert run(bot("héllo 🐦", cursor="B1"), bot("héllo 🐦 ça")) == [msg("héllo 🐦"), msg(" ça")]


def test_apology_as_first_message_is_the_filter() -> None:
    reader = TurnReader(BASE)
    items = run(bot("Sorry", cursor="B1", contentOrigin="Apology"), reader=reader)
    assert items == [TurnFailed("Apology", "Looks like the user's message has triggered the Bing filter")]
    assert reader.done
    assert not reader.sent_text


def test_apology_after_text_is_a_revoke() -> None:
    reader = TurnReader(BASE)
    items = run(bot("Some answ", cursor="B1"), bot("Sorry! That's on me.", contentOrigin="Apology"), reader=reader)
    assert items == [msg("Some answ"), TurnFailed("Apology", "Message revoke detected")]
    assert reader.sent_text


def test_apology_on_a_new_message_after_text_is_still_a_revoke() -> None:
    items = run(bot("Some answer", cursor="B1"), bot("Sorry", cursor="B2", contentOrigin="Apology"))
    assert items[-1] == TurnFailed("Apology", "Message revoke detected")


SEARCH_RESULT = typed(
    {
        "text": orjson.dumps(
            [
                {
                    "web_search_results": [
                        {"title": "Paris weather", "url": "https://w.test/paris", "snippets": ["sunny"]},
                        {"title": "Météo <&>", "url": "https://w.test/meteo?a=1&b=2"},
                    ]
                },
                {"other_results": [{"title": "News", "url": "https://n.test/"}]},
            ]
        ).decode(),
        "author": "bot",
        "messageType": "InternalSearchResult",
        "hiddenText": "```json\n...```",
    }
)


def test_search_query_then_citations_in_the_empty_title_form() -> None:
    card = (
        '[1]: https://w.test/paris ""\n[2]: https://w.test/meteo?a=1&b=2 ""\n'
        '[3]: https://unknown.test/ ""\n\nIt is sunny'
    )
    items = run(
        typed(
            {"text": "Searching the web for: `weather Paris`", "author": "bot", "messageType": "InternalSearchQuery"}
        ),
        SEARCH_RESULT,
        bot("It is sunny", cursor="B1", card=card),
    )
    assert items == [
        SydneyEvent("search_query", "Searching the web for: `weather Paris`"),
        SydneyEvent(
            "search_result",
            "[\n"
            '  {"index":1,"link":"https://w.test/paris","title":"Paris weather"},\n'
            '  {"index":2,"link":"https://w.test/meteo?a=1\\u0026b=2","title":"Météo \\u003c\\u0026\\u003e"}\n'
            "]",
        ),
        msg("It is sunny"),
    ]


def test_citations_without_quotes_match_and_with_a_title_do_not() -> None:
    card = '  [2]: https://n.test/\n[1]: https://w.test/paris "Paris weather"\n\nHi'
    items = run(SEARCH_RESULT, bot("Hi", cursor="B1", card=card))
    assert items == [
        SydneyEvent("search_result", '[\n  {"index":2,"link":"https://n.test/","title":"News"}\n]'),
        msg("Hi"),
    ]


def test_citations_only_on_cursor_frames_and_never_without_results() -> None:
    card = '[1]: https://w.test/paris ""\n\nIt is'
    assert run(SEARCH_RESULT, bot("It", cursor="B1"), bot("It is", card=card)) == [msg("It"), msg(" is")]
    assert run(bot("It is", cursor="B1", card=card)) == [msg("It is")]


def test_no_relevant_result_and_invalid_json_add_no_sources() -> None:
    card = '[1]: https://w.test/paris ""\n\nX'
    empty = typed(
        {
            "text": '[{"r":[{"title":"T","url":"https://w.test/paris"}]}]',
            "messageType": "InternalSearchResult",
            "hiddenText": "Web search returned no relevant result",
        }
    )
    invalid = typed({"text": "not json", "messageType": "InternalSearchResult"})
    assert run(empty, invalid, bot("X", cursor="B1", card=card)) == [msg("X")]


def test_loading_forms() -> None:
    frames = [
        typed(
            {"text": "Generating answers for you...", "messageType": "InternalLoaderMessage", "hiddenText": "Hidden"}
        ),
        typed({"text": "Generating answers for you...", "messageType": "InternalLoaderMessage"}),
        typed({"messageType": "InternalLoaderMessage", "hiddenText": None}),
        typed({"messageType": "InternalLoaderMessage", "author": "bot"}),
        typed(
            {
                "text": "Reading",
                "hiddenText": "doc.pdf",
                "messageType": "InternalLoaderMessage",
                "contentOrigin": "retrieve-shortdoc-progress",
            }
        ),
        typed(
            {
                "text": "Reading",
                "hiddenText": "doc.pdf",
                "messageType": "InternalLoaderMessage",
                "contentOrigin": "retrieve-shortdoc-progress",
            }
        ),
        typed(
            {
                "text": "Compressing",
                "hiddenText": "50%",
                "messageType": "InternalLoaderMessage",
                "contentOrigin": "compress-longdoc-progress",
            }
        ),
        typed(
            {
                "text": "Reading",
                "hiddenText": "doc.pdf",
                "messageType": "InternalLoaderMessage",
                "contentOrigin": "retrieve-shortdoc-progress",
            }
        ),
    ]
    assert run(*frames) == [
        SydneyEvent("loading", "Hidden"),
        SydneyEvent("loading", "Generating answers for you..."),
        SydneyEvent("loading", ""),
        SydneyEvent("loading", '{"messageType":"InternalLoaderMessage","author":"bot"}'),
        SydneyEvent("loading", "Reading doc.pdf (retrieve-shortdoc-progress)"),
        SydneyEvent("loading", "Compressing 50% (compress-longdoc-progress)"),
        SydneyEvent("loading", "Reading doc.pdf (retrieve-shortdoc-progress)"),
    ]


def test_generative_image_url_is_query_escaped_with_plus_for_space() -> None:
    frame = typed(
        {
            "text": "a cute pigeon, digital art & 50% <ça>~_.-",
            "author": "bot",
            "messageType": "GenerateContentQuery",
            "contentType": "IMAGE",
            "messageId": "M-1",
        }
    )
    [event] = run(frame, reader=TurnReader("http://127.0.0.1:8123/"))
    assert event == SydneyEvent(
        "generative_image",
        '{"text":"a cute pigeon, digital art \\u0026 50% \\u003cça\\u003e~_.-",'
        '"url":"http://127.0.0.1:8123/images/create?partner=sydney\\u0026re=1\\u0026showselective=1\\u0026sude=1'
        "\\u0026kseed=7500\\u0026SFX=2\\u0026gptexp=unknown"
        '\\u0026q=a+cute+pigeon%2C+digital+art+%26+50%25+%3C%C3%A7a%3E~_.-\\u0026iframeid=M-1"}',
    )
    assert orjson.loads(event.text)["url"].startswith("http://127.0.0.1:8123/images/create?partner=sydney&re=1&")


def test_generative_music_and_other_content_types() -> None:
    frames = [
        typed(
            {
                "messageType": "GenerateContentQuery",
                "contentType": "SUNO",
                "messageId": "M2",
                "hiddenText": "RequestId=rid-9",
                "invocation": "a song",
            }
        ),
        typed({"messageType": "GenerateContentQuery", "contentType": "VIDEO", "text": "x"}),
    ]
    assert run(*frames) == [SydneyEvent("generative_music", '{"iframeid":"M2","requestid":"rid-9","text":"a song"}')]


def test_progress_and_generated_code() -> None:
    frames = [
        typed({"messageType": "Progress", "contentOrigin": "CodeInterpreter", "invocation": "run(x)"}),
        typed({"messageType": "Progress", "contentOrigin": "CodeInterpreter", "invocation": ""}),
        typed(
            {
                "messageType": "Progress",
                "contentOrigin": "OpenAPI-spec",
                "adaptiveCards": [{"body": [{"columns": [{"items": [{"text": "Calling Klarna"}]}]}]}],
            }
        ),
        typed({"messageType": "Progress", "contentOrigin": "OpenAPI-spec", "adaptiveCards": []}),
        typed({"messageType": "Progress", "contentOrigin": "Other", "invocation": "y"}),
        typed({"messageType": "GeneratedCode", "text": "print(1)"}),
        typed({"messageType": "Disengaged", "text": "bye"}),
    ]
    assert run(*frames) == [
        SydneyEvent("executing_task", "run(x)"),
        SydneyEvent("openapi_call", "Calling Klarna"),
        SydneyEvent("generated_code", "print(1)"),
    ]


def error_result(value: str, message: str) -> str:
    return (
        '{"type":2,"invocationId":"0","item":{"firstNewMessageIndex":null,"conversationId":"C","requestId":"R",'
        f'"result":{{"value":"{value}","message":"{message}","serviceVersion":"20240301.1"}}}}}}\x1e'
        '{"type":3,"invocationId":"0"}\x1e'
    )


def test_each_error_value_is_a_turn_failure_as_sent() -> None:
    cases = {
        "Throttled": "Request is throttled.",
        "CaptchaChallenge": "User needs to solve CAPTCHA to continue.",
        "UnauthorizedRequest": "The conversationSignature is not set.",
        "InvalidSession": "Conversation 'C' doesn't exist or has expired.",
        "InvalidRequest": "Conversation 'C' with 8 messages already exists.",
        "ProcessingMessage": "",
    }
    for value, message in cases.items():
        reader = TurnReader(BASE)
        assert run(bot("Partial", cursor="B1"), error_result(value, message), reader=reader) == [
            msg("Partial"),
            TurnFailed(value, message),
        ]
        assert reader.done


def test_a_result_without_value_fails_with_empty_value() -> None:
    assert run('{"type":2,"invocationId":"0","item":{}}\x1e') == [TurnFailed("", "")]
    assert run('{"type":2,"invocationId":"0"}\x1e') == [TurnFailed("", "")]


def test_success_without_messages_or_suggestions() -> None:
    assert run('{"type":2,"item":{"result":{"value":"Success"}}}\x1e') == [TurnEnd([], None)]
    last_without = (
        '{"type":2,"item":{"messages":[{"suggestedResponses":[{"text":"x"}]},{"text":"y"}],'
        '"result":{"value":"Success"}}}\x1e'
    )
    assert run(last_without) == [TurnEnd([], None)]


def test_type_7_is_a_closed_failure() -> None:
    reader = TurnReader(BASE)
    items = run(
        bot("Hi", cursor="B1"),
        '{"type":7,"error":"Connection closed with an error.","allowReconnect":true}\x1e',
        reader=reader,
    )
    assert items == [msg("Hi"), TurnFailed("Closed", "Connection closed with an error.")]
    assert reader.done
    assert run('{"type":7}\x1e')[0].value == "Closed"  # type: ignore[union-attr]


def test_completion_before_the_result_ends_the_turn() -> None:
    assert run(
        '{"type":3,"invocationId":"0","error":"An unexpected error occurred invoking \'chat\' on the server."}\x1e'
    ) == [TurnFailed("Completion", "An unexpected error occurred invoking 'chat' on the server.")]


@settings(max_examples=200, deadline=None)
@given(
    final=st.text(min_size=0, max_size=40),
    cuts=st.lists(st.integers(min_value=0, max_value=40), max_size=12),
)
def test_any_split_of_a_cumulative_sequence_joins_to_the_final_text(final: str, cuts: list[int]) -> None:
    prefixes = [*sorted({min(cut, len(final)) for cut in cuts}), len(final)]
    frames = [bot(final[: prefixes[0]], cursor="B1")] + [bot(final[:n]) for n in prefixes[1:]]
    items = run(*frames, SUCCESS)
    deltas = [item.text for item in items if isinstance(item, SydneyEvent) and item.type == "message"]
    assert "".join(deltas) == final
    assert all(deltas)  # never an empty delta
    assert isinstance(items[-1], TurnEnd)
