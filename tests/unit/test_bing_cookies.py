"""Bing cookie parsing, formatting and Set-Cookie merging (sydney.md §1.2, §9.2)."""

from __future__ import annotations

import pytest

from libs.bing.cookies import format_cookies, merged_set_cookies, parse_cookies

SECRET = "Zx9-very-secret-cookie-value"


def test_cookie_string_is_split_on_semicolons_and_the_first_equals_and_trimmed() -> None:
    # SydneyQt's ParseCookies dropped `b` (two '=') and kept the key " c" untrimmed.
    assert parse_cookies("a=1; b=x=y ;  c = 3 ;") == {"a": "1", "b": "x=y", "c": "3"}


def test_base64_padding_survives() -> None:
    assert parse_cookies("_U=AbC+/dE==; KievRPSSecAuth=FAB==")["_U"] == "AbC+/dE=="


def test_empty_keys_and_pieces_without_equals_are_skipped() -> None:
    assert parse_cookies("=orphan; flag; a=; b=2") == {"a": "", "b": "2"}


def test_empty_text_is_no_cookies() -> None:
    assert parse_cookies("") == {}
    assert parse_cookies("  \n") == {}


def test_browser_export_json_array() -> None:
    text = '[{"name": "_U", "value": "u=1", "domain": ".bing.com"}, {"name": " MUID ", "value": "m"}]'
    assert parse_cookies(text) == {"_U": "u=1", "MUID": "m"}
    assert parse_cookies("  []") == {}


@pytest.mark.parametrize(
    "text",
    [
        f"just-a-{SECRET}",  # no pair at all
        f"[{{'name': '_U', 'value': '{SECRET}'}}]",  # not JSON
        f'[{{"name": "_U"}}, "{SECRET}"]',  # value missing
        f'["{SECRET}"]',  # not an object
        f'[{{"name": "_U", "value": 5}}, {{"name": "x", "value": "{SECRET}"}}]',
        f"_U={SECRET}\r\nX-Injected: 1",  # would split the header
        f"_U={SECRET}é",  # httpx/websockets cannot send it
    ],
)
def test_neither_form_is_a_value_error_that_quotes_nothing(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_cookies(text)
    assert SECRET not in str(caught.value)
    assert "just-a" not in str(caught.value)


def test_format_keeps_insertion_order_without_trailing_separator() -> None:
    assert format_cookies({"b": "2", "a": "x=y"}) == "b=2; a=x=y"
    assert format_cookies({}) == ""


def test_round_trip() -> None:
    cookies = {"_U": "a==", "MUID": "1", "SRCHHPGUSR": "SRCHLANG=en&IG=1"}
    assert parse_cookies(format_cookies(cookies)) == cookies


def test_set_cookie_values_are_merged_into_a_new_dict() -> None:
    cookies = {"_U": "u", "MUID": "old"}
    merged = merged_set_cookies(
        cookies,
        [
            "MUID=new; domain=.bing.com; path=/; expires=Tue, 31 Dec 2030 00:00:00 GMT",
            "_EDGE_S=F=1&SID=2; path=/; httponly",
            "SRCHD=AF=NOFORM; secure",
            "broken-no-equals; path=/",
            " =empty-name",
            "bad=caf\u00e9",  # latin-1 decoded header that could not be sent back
        ],
    )
    assert merged == {"_U": "u", "MUID": "new", "_EDGE_S": "F=1&SID=2", "SRCHD": "AF=NOFORM"}
    assert list(merged) == ["_U", "MUID", "_EDGE_S", "SRCHD"]
    assert cookies == {"_U": "u", "MUID": "old"}  # untouched
