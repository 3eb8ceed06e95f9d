"""image-worker's Bing backend, the parts that need no Bing: an OpenAI images request read, a
generative_image event decoded, Bing's image URL as the OpenAI route answers it."""

from __future__ import annotations

import pytest

from libs.errors import InvalidRequest
from services.image_worker.bing import _generative_image, _strip_query, _wanted


@pytest.mark.parametrize("size", [None, "1024x1024", "1024*1024", "auto"])
def test_bings_one_size_in_any_spelling(size: str | None) -> None:
    body = {"prompt": "a kite", **({"size": size} if size else {})}
    assert _wanted(body) == ("a kite", 1, "url")


@pytest.mark.parametrize("size", ["512x512", "1792x1024", "1024x1792", "1024X1024"])
def test_another_size_is_a_400_naming_size(size: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        _wanted({"prompt": "a kite", "size": size})
    assert caught.value.param == "size"


def test_n_and_response_format() -> None:
    assert _wanted({"prompt": "p", "n": 3, "response_format": "b64_json"}) == ("p", 3, "b64_json")
    for bad in ({"prompt": "p", "n": 0}, {"prompt": "p", "n": True}, {"prompt": "p", "response_format": "png"},
                {"prompt": " "}):
        with pytest.raises(InvalidRequest):
            _wanted(bad)


def test_a_generative_image_event_decodes_or_is_skipped() -> None:
    assert _generative_image('{"text":"a fox","url":"https://www.bing.com/images/create?q=a+fox"}') == {
        "text": "a fox", "url": "https://www.bing.com/images/create?q=a+fox"}
    assert _generative_image("not json") is None
    assert _generative_image('{"text": 1, "url": "x"}') is None
    assert _generative_image('["a"]') is None


def test_the_url_answer_is_bings_image_without_its_query() -> None:
    assert _strip_query("https://tse1.mm.bing.net/th/id/OIG.abc?w=270&h=270&c=6&r=0&o=5&pid=ImgGn") == (
        "https://tse1.mm.bing.net/th/id/OIG.abc")
