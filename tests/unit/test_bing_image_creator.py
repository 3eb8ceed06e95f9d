"""libs/bing/image_creator.py: the partner page, the polling URL and answers read as the fact sheet
(sydney.md §7) writes them, the partner URL's check, and the flow over an httpx MockTransport: the
account's cookies go to Bing's origin and nowhere else."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest

from libs.account_pool.outcome import Verdict
from libs.bing.failures import BingFailure
from libs.bing.image_creator import (
    create_images,
    creator_url,
    image_urls,
    is_rejected,
    page_error,
    polling_url,
    result_id,
)
from libs.errors import ContentFiltered, InvalidRequest, UpstreamAuthError, UpstreamError, UpstreamTimeout

BASE = "https://www.bing.com"
PARTNER = (f"{BASE}/images/create?partner=sydney&re=1&showselective=1&sude=1&kseed=7500&SFX=2&gptexp=unknown"
           "&q=a+cute+pigeon%2C+digital+art&iframeid=7e1c")
IMAGE = {"text": "a cute pigeon, digital art", "url": PARTNER}
COOKIES = {"_U": "account-secret-u", "MUID": "m1"}
GIR_PAGE = ('<html><body><div id="gir" data-c="/images/create/async/results/1-65f0a1b2c3?q=a+cute+pigeon'
            '&amp;IG=0AB1&amp;IID=images.as" data-mc="/images/create/async/mycreation?requestId=1-65f0a1b2c3">'
            "</div></body></html>")
READY = ('<div id="mmComponent_images_as_1">\n'
         '<div class="img_cont hoff"><img class="mimg" style="color: #a0a0a0" height="270" width="270" '
         'src="https://tse1.mm.bing.net/th/id/OIG.abc?w=270&amp;h=270&amp;c=6&amp;r=0&amp;o=5&amp;pid=ImgGn" '
         'alt="a cute pigeon" /></div>\n'
         '<div class="img_cont hoff"><img class="mimg" src="https://tse2.mm.bing.net/th/id/OIG.def?w=270" /></div>\n'
         "</div>")


# ---- sans-I/O -------------------------------------------------------------------------------------


def test_result_id_is_everything_up_to_the_first_question_mark_of_the_gir_path() -> None:
    assert result_id(GIR_PAGE) == "1-65f0a1b2c3"


def test_no_result_id_in_a_page_without_the_gir_path() -> None:
    assert result_id('<div class="gil_err_mt">Something went wrong</div>') is None


def test_a_result_id_that_would_leave_the_results_path_is_not_taken() -> None:
    assert result_id('data-c="/images/create/async/results/../../admin?x"') is None
    assert result_id('data-c="/images/create/async/results/a/b?x"') is None


def test_polling_url_escapes_the_prompt_as_go_query_escape() -> None:
    assert polling_url(BASE, "1-abc", "a cute pigeon, digital art") == (
        f"{BASE}/images/create/async/results/1-abc?q=a+cute+pigeon%2C+digital+art&partner=sydney"
        "&showselective=1&IID=images.as")


def test_image_urls_one_line_mimg_tags_in_order_with_entities_decoded() -> None:
    assert image_urls(READY) == [
        "https://tse1.mm.bing.net/th/id/OIG.abc?w=270&h=270&c=6&r=0&o=5&pid=ImgGn",
        "https://tse2.mm.bing.net/th/id/OIG.def?w=270",
    ]


def test_image_urls_skip_a_tag_broken_across_lines_and_non_http_sources() -> None:
    answer = ('<img class="mimg" alt="x"\n src="https://tse1.mm.bing.net/th/id/OIG.split" />\n'
              '<img class="mimg" src="javascript:alert(1)" />\n<img class="other" src="https://x.invalid/a" />')
    assert image_urls(answer) == []
    assert image_urls("") == []


def test_rejection_text() -> None:
    assert is_rejected('<div class="gil_err_mt">Please try again or come back later.</div>')
    assert is_rejected("This prompt has been blocked.")
    assert not is_rejected(READY)
    assert page_error('<div class="gil_err_mt"> Bad <b>prompt</b>\n here </div>') == "Bad prompt here"


# ---- the partner URL's check ----------------------------------------------------------------------


def test_the_partner_url_of_the_configured_origin_is_accepted_and_rebuilt() -> None:
    assert creator_url(BASE, PARTNER) == PARTNER
    assert creator_url(BASE, PARTNER.replace("https://www.bing.com", "HTTPS://WWW.Bing.com:443")) == PARTNER
    assert creator_url("http://127.0.0.1:8123", "http://127.0.0.1:8123/images/create?q=x") == (
        "http://127.0.0.1:8123/images/create?q=x")


@pytest.mark.parametrize("url", [
    "https://evil.example/images/create?q=x",  # other host
    "https://www.bing.com.evil.example/images/create?q=x",
    "https://www.bing.com:8443/images/create?q=x",  # other port
    "http://www.bing.com/images/create?q=x",  # other scheme
    "https://www.bing.com/images/create/async/results/1-a?q=x",  # other path
    "https://www.bing.com/images/creat?q=x",
    "https://www.bing.com/Images/create?q=x",
    "https://www.bing.com/images/create/../../x?q=x",
    "https://www.bing.com/?q=/images/create",
    "https://www.bing.com@evil.example/images/create?q=x",  # user info tricks
    "https://user:pw@www.bing.com/images/create?q=x",
    "https://evil.example\\@www.bing.com/images/create?q=x",
    "https://evil.example#@www.bing.com/images/create?q=x",
    "https://www.bing.com /images/create?q=x",
    "https://www.bing.com/images/create?q=x\r\nHost: evil.example",
    "//www.bing.com/images/create?q=x",
    "https://www.bing.com:99999/images/create?q=x",
    "",
])
def test_any_other_url_is_the_clients_400_naming_image_url(url: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        creator_url(BASE, url)
    assert caught.value.param == "image.url" and caught.value.status == 400


# ---- the flow over a mock transport --------------------------------------------------------------


class Bing:
    """A scripted creator: the partner page answer, then poll answers in turn; every request kept."""

    def __init__(self, page: Callable[[httpx.Request], httpx.Response], polls: list[str]) -> None:
        self.page = page
        self.polls = list(polls)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.host != "www.bing.com":
            return httpx.Response(200, text="elsewhere")
        if request.url.path.startswith("/images/create/async/results/"):
            return httpx.Response(200, text=self.polls.pop(0) if len(self.polls) > 1 else self.polls[0])
        return self.page(request)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self), follow_redirects=False)


def _page(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, text=GIR_PAGE)


async def _create(bing: Bing, *, image: dict[str, str] = IMAGE, deadline: float | None = None,
                  attempts: int = 15) -> dict[str, object]:
    async with bing.client() as http:
        return await create_images(http, BASE, image, COOKIES, deadline=deadline or time.time() + 30,
                                   interval=0.001, attempts=attempts)


async def test_images_after_empty_polls() -> None:
    bing = Bing(_page, ["", "", READY])
    result = await _create(bing)
    assert result["text"] == IMAGE["text"] and result["url"] == PARTNER
    assert result["image_urls"] == image_urls(READY)
    assert type(result["duration"]) is int and result["duration"] > 0
    first, *polls = bing.requests
    assert str(first.url) == PARTNER
    assert first.headers["cookie"] == "_U=account-secret-u; MUID=m1"
    assert len(polls) == 3
    assert str(polls[0].url) == polling_url(BASE, "1-65f0a1b2c3", IMAGE["text"])
    assert all(r.headers["cookie"] == "_U=account-secret-u; MUID=m1" for r in polls)


async def test_a_bad_partner_url_sends_nothing() -> None:
    bing = Bing(_page, [READY])
    with pytest.raises(InvalidRequest):
        await _create(bing, image={"text": "x", "url": "https://evil.example/images/create?q=x"})
    assert bing.requests == []


async def test_a_redirect_elsewhere_is_not_followed_so_the_cookies_stay_home() -> None:
    def page(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"location": "https://evil.example/steal?q=1"})

    bing = Bing(page, [READY])
    with pytest.raises(BingFailure) as caught:
        await _create(bing)
    assert [r.url.host for r in bing.requests] == ["www.bing.com"]
    assert isinstance(caught.value.error, UpstreamError)
    assert caught.value.outcome.verdict is Verdict.FAILURE


@pytest.mark.parametrize("location", ["//evil.example/images/create?q=x", "https://www.bing.com@evil.example/x",
                                      "https://www.bing.com:444/images/create?q=x", "http://www.bing.com/x"])
async def test_tricky_redirects_are_not_followed(location: str) -> None:
    bing = Bing(lambda request: httpx.Response(301, headers={"location": location}), [READY])
    with pytest.raises(BingFailure):
        await _create(bing)
    assert len(bing.requests) == 1


async def test_a_redirect_within_bing_is_followed_with_the_cookies() -> None:
    def page(request: httpx.Request) -> httpx.Response:
        if request.url.params.get("hop") != "1":
            return httpx.Response(302, headers={"location": "/images/create?partner=sydney&q=x&hop=1"})
        return httpx.Response(200, text=GIR_PAGE)

    bing = Bing(page, [READY])
    result = await _create(bing)
    assert result["image_urls"]
    assert [r.url.path for r in bing.requests[:2]] == ["/images/create", "/images/create"]
    assert bing.requests[1].headers["cookie"] == "_U=account-secret-u; MUID=m1"


async def test_a_redirect_loop_ends_after_five() -> None:
    bing = Bing(lambda request: httpx.Response(302, headers={"location": PARTNER}), [READY])
    with pytest.raises(BingFailure, match="more than 5"):
        await _create(bing)
    assert len(bing.requests) == 6


async def test_a_redirect_to_microsofts_login_means_signed_out() -> None:
    bing = Bing(lambda request: httpx.Response(302, headers={"location": "https://login.live.com/login.srf"}),
                [READY])
    with pytest.raises(BingFailure) as caught:
        await _create(bing)
    assert isinstance(caught.value.error, UpstreamAuthError)
    assert caught.value.outcome.verdict is Verdict.AUTH_INVALID
    assert len(bing.requests) == 1


async def test_a_sign_in_page_without_gir_means_signed_out() -> None:
    bing = Bing(lambda request: httpx.Response(200, text='<div id="giloader">Sign in to create images</div>'),
                [READY])
    with pytest.raises(BingFailure) as caught:
        await _create(bing)
    assert isinstance(caught.value.error, UpstreamAuthError)
    assert caught.value.outcome.verdict is Verdict.AUTH_INVALID


async def test_another_page_without_gir_is_an_upstream_error_quoting_bing() -> None:
    bing = Bing(lambda request: httpx.Response(200, text='<div class="gil_err_mt">Region not supported</div>'),
                [READY])
    with pytest.raises(BingFailure) as caught:
        await _create(bing)
    error = caught.value.error
    assert type(error) is UpstreamError and error.retryable
    assert "cannot find image creation result" in error.message and "Region not supported" in error.message
    assert caught.value.outcome.verdict is Verdict.FAILURE


async def test_a_rejected_prompt_is_content_filtered() -> None:
    bing = Bing(_page, ["", '<div class="gil_err_mt">Please try again or come back later.</div>'])
    with pytest.raises(BingFailure) as caught:
        await _create(bing)
    error = caught.value.error
    assert isinstance(error, ContentFiltered) and error.code == "content_policy_violation" and error.status == 400
    assert error.message == "the prompt for image creation has been rejected by Bing"
    assert caught.value.outcome.verdict is Verdict.NEUTRAL


async def test_no_images_after_the_attempts_is_a_timeout() -> None:
    bing = Bing(_page, [""])
    with pytest.raises(BingFailure) as caught:
        await _create(bing, attempts=4)
    assert type(caught.value.error) is UpstreamTimeout and not caught.value.error.retryable
    assert caught.value.error.message == "image creation timeout"
    assert len(bing.requests) == 1 + 4


async def test_no_poll_goes_past_the_deadline() -> None:
    bing = Bing(_page, [""])
    deadline = time.time() + 0.3
    async with bing.client() as http:
        with pytest.raises(BingFailure) as caught:
            await create_images(http, BASE, IMAGE, COOKIES, deadline=deadline, interval=0.1, attempts=100)
    assert type(caught.value.error) is UpstreamTimeout and not caught.value.error.retryable
    assert time.time() < deadline + 0.05
    assert len(bing.requests) <= 4


async def test_a_poll_status_is_classified() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if "async/results" in request.url.path:
            return httpx.Response(429, text="slow down")
        return httpx.Response(200, text=GIR_PAGE)

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        with pytest.raises(BingFailure) as caught:
            await create_images(http, BASE, IMAGE, COOKIES, deadline=time.time() + 5, interval=0.001)
    assert caught.value.outcome.verdict is Verdict.RATE_LIMITED
