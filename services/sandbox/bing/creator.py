"""Bing Image Creator's "sydney partner" flow (sheet §7.1-§7.3): the partner page holding the gir div,
the polled results, and the thumbnails they point at (real PNGs)."""

from __future__ import annotations

import html
from collections import OrderedDict
from dataclasses import dataclass
from urllib.parse import quote_plus

from .. import png
from ..asgi import TEXT, Scope, Send, respond
from ..directives import strip
from ..generate import seed_of
from . import directives, ids
from .http import HTML, base_url, query

RESULTS_PREFIX = "/images/create/async/results/"
THUMB_PREFIX = "/th/id/"
DEFAULT_POLLS = 2
IMAGES = 4
THUMB_SIZE = 64
MAX_JOBS = 1_000
REJECTED_PAGE = (b'<!DOCTYPE html><html><body><div class="gil_err_mt">Please try again or come back later.'
                 b"</div></body></html>")


@dataclass(slots=True)
class Job:
    key: str  # hex; the result id is "1-<key>", thumbnails OIG.<key>-<k>
    prompt: str
    account: str
    polls_left: int  # empty answers before the images; -1: never ready
    rejected: bool


class Creator:
    def __init__(self) -> None:
        self.jobs: OrderedDict[str, Job] = OrderedDict()

    def reset(self) -> None:
        self.jobs.clear()

    async def page(self, scope: Scope, send: Send, account: str | None) -> dict[str, object]:
        """GET /images/create?...&q=: the partner page. Without a signed-in account: no gir div."""
        prompt = query(scope).get("q", "")
        if account is None:
            await respond(send, 200, _page('<div id="giloader">Sign in to create images (sandbox)</div>'), HTML)
            return {"gir": False, "why": "not signed in"}
        try:
            found = directives.parse(prompt)
            if not strip(prompt):
                raise directives.DirectiveError("the q parameter (the image prompt) is empty")
        except directives.DirectiveError as exc:
            await respond(send, 200, _page(f'<div class="gil_err_mt">{html.escape(str(exc))}</div>'), HTML)
            return {"gir": False, "why": str(exc)}
        never = "never" in found.flags
        job = Job(ids.hex_id(), prompt, account, -1 if never else found.ints.get("polls", DEFAULT_POLLS),
                  "rejected" in found.flags)
        self.jobs[job.key] = job
        while len(self.jobs) > MAX_JOBS:
            self.jobs.popitem(last=False)
        data_c = f"{RESULTS_PREFIX}1-{job.key}?q={quote_plus(prompt)}&IG={ids.hex_id().upper()}&IID=images.as"
        await respond(send, 200, _page(f'<div id="gir" data-c="{html.escape(data_c, quote=True)}" '
                                       f'data-mc="/images/create/async/mycreation?requestId=1-{job.key}" '
                                       'data-nfurl=""></div>'), HTML)
        return {"gir": True, "result_id": f"1-{job.key}", "prompt": prompt}

    async def poll(self, scope: Scope, send: Send, account: str | None) -> dict[str, object]:
        """GET /images/create/async/results/<ID>: empty while pending, then one-line mimg tags."""
        result_id = scope["path"][len(RESULTS_PREFIX):]
        job = self.jobs.get(result_id.removeprefix("1-"))
        if job is None:
            await respond(send, 404, b"No such image creation (sandbox)\n", TEXT)
            return {"status": 404}
        if account != job.account:
            await respond(send, 403, b"Sign in as the account that asked for these images (sandbox)\n", TEXT)
            return {"status": 403}
        if job.rejected:
            await respond(send, 200, REJECTED_PAGE, HTML)
            return {"status": 200, "state": "rejected"}
        if job.polls_left != 0:
            if job.polls_left > 0:
                job.polls_left -= 1
            await respond(send, 200, b"", HTML)
            return {"status": 200, "state": "pending"}
        base = base_url(scope)
        alt = html.escape(strip(job.prompt), quote=True)
        tags = "\n".join(
            f'<div class="img_cont hoff"><img class="mimg" style="color: #a0a0a0" height="270" width="270" '
            f'src="{base}{THUMB_PREFIX}OIG.{job.key}-{k}?w=270&h=270&c=6&r=0&o=5&pid=ImgGn" alt="{alt}" /></div>'
            for k in range(1, IMAGES + 1))
        await respond(send, 200, _page(f'<div id="mmComponent_images_as_1">\n{tags}\n</div>'), HTML)
        return {"status": 200, "state": "ready"}

    async def thumbnail(self, scope: Scope, send: Send) -> int:
        """GET /th/id/OIG.<key>-<k>: a small PNG, the same for the same name."""
        name = scope["path"][len(THUMB_PREFIX):]
        key, dash, k = name.removeprefix("OIG.").rpartition("-")
        if not name.startswith("OIG.") or not dash or key not in self.jobs or not k.isdigit():
            await respond(send, 404, b"No such image (sandbox)\n", TEXT)
            return 404
        await respond(send, 200, png.tiles(THUMB_SIZE, THUMB_SIZE, seed_of(name)), b"image/png")
        return 200


def _page(body: str) -> bytes:
    return f"<!DOCTYPE html><html><head><title>Image Creator (sandbox)</title></head><body>\n{body}\n</body></html>" \
        .encode()


def partner_url(base: str, prompt: str, iframe_id: str) -> str:
    """The URL SydneyQt builds for a GenerateContentQuery (§7.1), for documentation and tests."""
    return (f"{base}/images/create?partner=sydney&re=1&showselective=1&sude=1&kseed=7500&SFX=2&gptexp=unknown"
            f"&q={quote_plus(prompt)}&iframeid={iframe_id}")
