"""Bing Image Creator's "sydney partner" flow (fact sheet sydney.md §7): a GenerativeImage
{text, url} in, SydneyQt's GenerateImageResult {text, url, image_urls, duration} out.

1. GET the partner URL (`<BING_BASE_URL>/images/create?partner=sydney&...&q=...`) with the account's
   cookies; its page holds `/images/create/async/results/<ID>?` (the `gir` div);
2. poll `<BING_BASE_URL>/images/create/async/results/<ID>?q=...&partner=sydney&showselective=1&IID=images.as`
   every `interval` seconds, up to `attempts` times, until the answer holds one-line
   `<img class="mimg" ... src="...">` tags, or says `Please try again or come back later` (rejected).

The partner URL is the client's (a `generative_image` event it got earlier, or any text it sends
to `/image/create`), and the first GET carries an account's cookies: so the URL must be exactly the
configured Bing origin's `/images/create` (scheme, host, port and path compared, no user info), is
rebuilt from the checked parts before it is sent, and a redirect is followed only within that origin.
Cookies never leave for another host.

The helpers above `create_images` are sans-I/O. Failures are `BingFailure`s (libs/bing/failures.py):
what the account pool learns and what the client gets; a bad `image.url` is the client's 400.
"""

from __future__ import annotations

import asyncio
import html
import re
import time
from collections.abc import Mapping
from typing import Any, TypeVar
from urllib.parse import quote_plus, urljoin, urlsplit

import httpx

from libs.account_pool.outcome import Outcome, Verdict
from libs.bing.cookies import format_cookies
from libs.bing.failures import BingFailure
from libs.bing.headers import EDGE_USER_AGENT
from libs.errors import (
    ContentFiltered,
    InvalidRequest,
    SwitchyardError,
    UpstreamAuthError,
    UpstreamError,
    UpstreamTimeout,
)

CREATE_PATH = "/images/create"
RESULTS_PATH = "/images/create/async/results/"
REJECTED = "Please try again or come back later"  # SydneyQt's marker of a refused prompt (§7.2 step 4)
REJECTED_MESSAGE = "the prompt for image creation has been rejected by Bing"
TIMEOUT_MESSAGE = "image creation timeout"
REQUEST_TIMEOUT = 15.0  # SydneyQt's, per request
MAX_REDIRECTS = 5
MAX_PAGE_BYTES = 4 * 1024 * 1024  # a creator page is tens of KB; this only stops a runaway answer
DEFAULT_INTERVAL = 3.0  # SydneyQt's sleep before each poll
DEFAULT_ATTEMPTS = 15  # SydneyQt's polls
_SHORT = 160

# The result id is everything up to the first `?` (SydneyQt); it goes into a path of ours, so only
# the characters Bing's ids use ("1-<hex>", "4-<hex>") are taken: no slash, no dot-segment.
_RESULT_ID = re.compile(r"/images/create/async/results/([A-Za-z0-9_-][A-Za-z0-9_.-]*)\?")
# SydneyQt's regex does not cross a newline: the tag must be on one line
_MIMG = re.compile(r'<img class="mimg"[^\n]*?src="([^"\n]*)"')
_ERROR_DIV = re.compile(r'<div class="gil_err_mt"[^>]*>(.*?)</div>', re.S)
_TAG = re.compile(r"<[^>]*>")
# A signed-out image creator shows a sign-in prompt ("Sign in to create", "Join & Create") instead of
# the gir div. Not matched: a bare "Sign in", which a signed-in page's header may hold too (an
# account must not be quarantined for a page that failed for another reason). Unverified against
# live Bing (the sheet has no capture of the signed-out page).
_SIGN_IN = re.compile(r"sign[ -]?in to (?:create|continue)|join\s*(?:&amp;|&)\s*create", re.I)
_LOGIN_HOST = re.compile(r"^https?://login\.", re.I)  # a redirect to Microsoft's login (login.live.com)
# the classic flow's refusals (§7.4): the same meaning as REJECTED
_BLOCKED = re.compile(r"this prompt (?:has been blocked|is being reviewed)", re.I)
_UNSAFE = re.compile(r"[\x00-\x20\x7f\\]")  # whitespace, controls, backslash: parsers disagree on them


E = TypeVar("E", bound=SwitchyardError)


def not_retried(err: E) -> E:
    """`err`, marked not to be tried again (by this worker on another account, or by the runtime on
    another replica): when another try would only meet the same answer or start a long wait anew.
    Per instance, as InvalidRequest refines its code: the client-facing code stays the class's."""
    err.retryable = False  # type: ignore[misc]
    return err


# ---- sans-I/O ---------------------------------------------------------------------------------


def _origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL, the port made explicit; ValueError otherwise."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("not an http(s) URL with a host")
    if "@" in parts.netloc:
        raise ValueError("user info in the URL")
    port = parts.port  # ValueError for a port that is not a number in range
    return scheme, parts.hostname.lower(), port if port is not None else (443 if scheme == "https" else 80)


def creator_url(base_url: str, url: object) -> str:
    """The partner URL to GET: `url` when it is `<base_url>/images/create?...` exactly (scheme, host,
    port and path), rebuilt from the base and its query; InvalidRequest (param `image.url`) otherwise."""
    def bad(why: str) -> InvalidRequest:
        return InvalidRequest(f"image.url must be a Bing image creator URL ({base_url}{CREATE_PATH}?...): {why}",
                              param="image.url", code="invalid_value")

    if not isinstance(url, str):
        raise bad("it is not a string")
    if _UNSAFE.search(url):
        raise bad("it holds whitespace, a control character or a backslash")
    base = urlsplit(base_url)
    parts = urlsplit(url)
    try:
        on_origin = _origin(url) == _origin(base_url)
    except ValueError as exc:
        raise bad(str(exc)) from None
    if not on_origin:
        raise bad("another scheme, host or port")
    if parts.path != base.path.rstrip("/") + CREATE_PATH:
        raise bad("another path")
    rebuilt = f"{base.scheme}://{base.netloc}{parts.path}" + (f"?{parts.query}" if parts.query else "")
    # a second parser must agree (httpx is the one that sends it)
    sent = httpx.URL(rebuilt)
    scheme, host, port = _origin(base_url)
    if (sent.scheme, sent.host, sent.port or port, sent.path) != (scheme, host, port, parts.path):
        raise bad("it does not parse the same way twice")
    return rebuilt


def same_origin(base_url: str, url: str) -> bool:
    """Whether `url` is on `base_url`'s origin, without user info (where a redirect may be followed)."""
    try:
        return _origin(url) == _origin(base_url) and not _UNSAFE.search(url)
    except ValueError:
        return False


def result_id(page: str) -> str | None:
    """The image creation's result id in the partner page (§7.2 step 2), None when there is none."""
    found = _RESULT_ID.search(page)
    return found.group(1) if found else None


def polling_url(base_url: str, result: str, text: str) -> str:
    """Where the results are polled (§7.2 step 3); `q` is the prompt as Go's QueryEscape writes it."""
    return f"{base_url}{RESULTS_PATH}{result}?q={quote_plus(text)}&partner=sydney&showselective=1&IID=images.as"


def image_urls(answer: str) -> list[str]:
    """The image URLs of a poll answer: each one-line `<img class="mimg" ... src="URL"` tag's URL,
    HTML entities decoded (`&amp;` in a query), in page order; only http(s) URLs."""
    urls = [html.unescape(src) for src in _MIMG.findall(answer)]
    return [u for u in urls if u.lower().startswith(("https://", "http://"))]


def is_rejected(answer: str) -> bool:
    return REJECTED in answer or _BLOCKED.search(answer) is not None


def page_error(page: str) -> str:
    """The text of the page's `gil_err_mt` error div (whitespace folded, shortened), or ""."""
    found = _ERROR_DIV.search(page)
    if not found:
        return ""
    return " ".join(html.unescape(_TAG.sub(" ", found.group(1))).split())[:_SHORT]


def is_sign_in(page: str) -> bool:
    return _SIGN_IN.search(page) is not None


def refusal(page: str) -> BingFailure:
    """What a partner page without a result id means."""
    if is_rejected(page):
        return rejected()
    said = page_error(page)
    if is_sign_in(page) and not said:
        return signed_out()
    detail = f" (Bing's image creator said: {said})" if said else ""
    return BingFailure("NoResult", Outcome(Verdict.FAILURE, reason="image creator: no result id"),
                       UpstreamError(f"cannot find image creation result{detail}"))


def signed_out() -> BingFailure:
    return BingFailure("SignedOut", Outcome(Verdict.AUTH_INVALID, reason="image creator: signed out"),
                       UpstreamAuthError("Bing's image creator asks the account to sign in (its cookies are "
                                         "signed out or expired)"))


def rejected() -> BingFailure:
    return BingFailure("Rejected", Outcome.neutral(), ContentFiltered(REJECTED_MESSAGE))


def timed_out() -> BingFailure:
    """No images within the polls or the job's time: Bing was slow, not the account, and another
    try would start the whole wait again (not retried)."""
    return BingFailure("Timeout", Outcome.neutral(), not_retried(UpstreamTimeout(TIMEOUT_MESSAGE)))


def status_failure(status: int, step: str) -> BingFailure:
    if status == 401:
        return BingFailure(f"HTTP {status}", Outcome(Verdict.AUTH_INVALID, reason=f"image creator {step}: HTTP 401"),
                           UpstreamAuthError(f"Bing's image creator refused the account ({step}: HTTP 401)"))
    if status == 429:
        return BingFailure("HTTP 429", Outcome(Verdict.RATE_LIMITED, reason=f"image creator {step}: HTTP 429"),
                           UpstreamError(f"Bing's image creator rate limited the account ({step}: HTTP 429)"))
    return BingFailure(f"HTTP {status}", Outcome(Verdict.FAILURE, reason=f"image creator {step}: HTTP {status}"),
                       UpstreamError(f"Bing's image creator answered HTTP {status} ({step})"))


def _result(image: Mapping[str, Any], urls: list[str], started_ns: int) -> dict[str, Any]:
    return {"text": image["text"], "url": image["url"], "image_urls": urls,
            "duration": max(0, time.monotonic_ns() - started_ns)}


# ---- I/O --------------------------------------------------------------------------------------


async def _get(http: httpx.AsyncClient, url: str, headers: Mapping[str, str], deadline: float,
               step: str) -> tuple[int, str | None, str]:
    """One GET within REQUEST_TIMEOUT and the deadline, no redirect followed: (status, the Location
    of a redirect or None, the body read up to MAX_PAGE_BYTES)."""
    left = deadline - time.time()
    if left <= 0:
        raise timed_out()
    within = min(REQUEST_TIMEOUT, left)
    try:
        async with asyncio.timeout(within), http.stream("GET", url, headers=headers, follow_redirects=False,
                                                        timeout=within) as response:
            size, parts = 0, []  # read by parts: a runaway body stops at the bound
            async for part in response.aiter_bytes():
                size += len(part)
                if size > MAX_PAGE_BYTES:
                    raise BingFailure("TooLarge", Outcome(Verdict.FAILURE, reason=f"image creator {step}: too large"),
                                      UpstreamError(f"Bing's image creator sent more than {MAX_PAGE_BYTES} bytes "
                                                    f"({step})"))
                parts.append(part)
            location = response.headers.get("location") if response.is_redirect else None
            return response.status_code, location, b"".join(parts).decode(response.encoding or "utf-8", "replace")
    except (TimeoutError, httpx.TimeoutException):
        if within == left:  # the deadline cut it, not the request's own limit
            raise timed_out() from None
        raise BingFailure("Timeout", Outcome(Verdict.FAILURE, reason=f"image creator {step}: no answer"),
                          UpstreamError(f"Bing's image creator did not answer within {REQUEST_TIMEOUT:g} s "
                                        f"({step})")) from None
    except httpx.HTTPError as exc:
        # the exception's text could quote the URL: only its type is said
        raise BingFailure(type(exc).__name__, Outcome(Verdict.FAILURE, reason=f"image creator {step}: "
                                                      f"{type(exc).__name__}"),
                          UpstreamError(f"cannot reach Bing's image creator ({step}: {type(exc).__name__})")) from None


async def _partner_page(http: httpx.AsyncClient, base_url: str, url: str, headers: Mapping[str, str],
                        deadline: float) -> str:
    """The partner page, redirects followed within Bing's origin only (cookies go nowhere else)."""
    for _ in range(MAX_REDIRECTS + 1):
        status, location, page = await _get(http, url, headers, deadline, "create")
        if location is not None:
            target = urljoin(url, location)
            if not same_origin(base_url, target):
                if _LOGIN_HOST.match(target):
                    raise signed_out()
                raise BingFailure("Redirect", Outcome(Verdict.FAILURE, reason="image creator: redirected off Bing"),
                                  UpstreamError("Bing's image creator redirected to another site (not followed)"))
            url = target
            continue
        if status != 200:
            raise status_failure(status, "create")
        return page
    raise BingFailure("Redirect", Outcome(Verdict.FAILURE, reason="image creator: redirect loop"),
                      UpstreamError(f"Bing's image creator redirected more than {MAX_REDIRECTS} times"))


async def create_images(
    http: httpx.AsyncClient, base_url: str, image: Mapping[str, Any], cookies: Mapping[str, str], *,
    deadline: float, interval: float = DEFAULT_INTERVAL, attempts: int = DEFAULT_ATTEMPTS,
) -> dict[str, Any]:
    """SydneyQt's GenerateImage (§7.2): the GenerateImageResult of `image` {text, url}, made on
    `cookies`, within `deadline` (unix time). `http` should not follow redirects on its own (each
    request here says so anyway) and is used with an explicit Cookie header, never its jar.

    InvalidRequest for an `image.url` that is not Bing's image creator; BingFailure for the rest."""
    text, url = image.get("text"), image.get("url")
    if not isinstance(text, str):
        raise InvalidRequest("image.text must be a string", param="image.text", code="invalid_value")
    checked = creator_url(base_url, url)
    started = time.monotonic_ns()
    headers = {"Cookie": format_cookies(cookies), "User-Agent": EDGE_USER_AGENT,
               "Referer": f"{base_url}/search?q=Bing+AI&showconv=1&wlexpsignin=1"}
    page = await _partner_page(http, base_url, checked, headers, deadline)
    found = result_id(page)
    if found is None:
        raise refusal(page)
    poll = polling_url(base_url, found, text)
    for _ in range(attempts):
        if time.time() + interval >= deadline:
            break  # the next answer would come too late to be sent
        await asyncio.sleep(interval)
        status, _, answer = await _get(http, poll, headers, deadline, "poll")
        if status != 200:
            raise status_failure(status, "poll")
        if is_rejected(answer):
            raise rejected()
        urls = image_urls(answer)
        if urls:
            return _result({"text": text, "url": url}, urls, started)
    raise timed_out()
