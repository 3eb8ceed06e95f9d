"""The I/O of the Bing protocol: conversation/create and kblob over httpx, the ChatHub websocket
over websockets. Everything it parses is parsed by the sans-I/O modules (conversation, kblob,
signalr, turn); this module only moves bytes, keeps time and converts transport errors.

Exceptions carry secret-free text and are raised `from None` where the foreign exception could
quote the URL (it holds the sec_access_token) or a header (cookies): a traceback logged by a
caller must not carry them either.

The cookie map given to each call is the whole truth about cookies: every request sends an
explicit `Cookie` header (empty when there are none), so an httpx client's own cookie jar, which
collects every Set-Cookie it sees, never adds one account's cookies to another's request.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from libs.bing import signalr
from libs.bing.conversation import Conversation, parse_create
from libs.bing.cookies import format_cookies, merged_set_cookies
from libs.bing.errors import (
    BingError,
    BingUnavailable,
    ChatClosed,
    ChatRefused,
    ChatTimeout,
    CreateFailed,
    MalformedFrame,
    UploadRejected,
)
from libs.bing.headers import EDGE_USER_AGENT, KBLOB_REFERER, chathub_url, upgrade_headers
from libs.bing.kblob import kblob_form, parse_kblob
from libs.bing.turn import TurnItem, TurnReader

__all__ = [
    "BingEndpoints",
    "BingError",
    "BingUnavailable",
    "ChatClosed",
    "ChatRefused",
    "ChatSession",
    "ChatTimeout",
    "CreateFailed",
    "MalformedFrame",
    "UploadRejected",
    "chat",
    "create_conversation",
    "upload_image",
]

CREATE_TIMEOUT = 10.0  # SydneyQt's
UPLOAD_TIMEOUT = 60.0  # SydneyQt's
WRITE_TIMEOUT = 5.0  # SydneyQt's per websocket write
CLOSE_TIMEOUT = 2.0  # the closing handshake: the turn is over, do not wait long for the server's close
PING_INTERVAL = 15.0  # a ping at most this often while messages arrive (node-chatgpt-api's cadence)
# A server ping is answered unless we pinged this recently: a server that echoes pings (as
# node-chatgpt-api says Bing does) must not turn an answer-every-ping rule into a ping storm.
PING_ANSWER_GAP = 1.0
# SydneyQt reads without a size limit; cumulative answer frames are tens of KB. This bound only
# stops a broken upstream from growing one message without end.
MAX_MESSAGE_BYTES = 32 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class BingEndpoints:
    """Where the upstream lives; every URL SydneyQt hard-codes is configurable (§10)."""

    create_url: str  # https://edgeservices.bing.com/edgesvc/turing/conversation/create
    chathub_url: str  # wss://sydney.bing.com/sydney/ChatHub
    base_url: str  # https://www.bing.com (kblob, blob URLs, the image creator)

    @property
    def kblob_url(self) -> str:
        return self.base_url.rstrip("/") + "/images/kblob"

    def blob_url(self, blob_id: str) -> str:
        return self.base_url.rstrip("/") + "/images/blob?bcid=" + blob_id


BING = BingEndpoints(
    create_url="https://edgeservices.bing.com/edgesvc/turing/conversation/create",
    chathub_url="wss://sydney.bing.com/sydney/ChatHub",
    base_url="https://www.bing.com",
)


async def create_conversation(
    http: httpx.AsyncClient,
    endpoints: BingEndpoints,
    cookies: Mapping[str, str],
    *,
    http_timeout: float = CREATE_TIMEOUT,
) -> tuple[Conversation, dict[str, str]]:
    """A new conversation, and `cookies` with the answer's Set-Cookie merged in (SydneyQt sends the
    merged map on the websocket upgrade and keeps it for next time). Raises CreateFailed (the
    upstream said no) or BingUnavailable (it could not be reached)."""
    headers = {"Accept": "application/json", "User-Agent": EDGE_USER_AGENT, "Cookie": format_cookies(cookies)}
    try:
        response = await http.get(endpoints.create_url, headers=headers, timeout=http_timeout)
    except httpx.HTTPError as exc:
        raise BingUnavailable(f"conversation/create failed: {type(exc).__name__}") from None
    conversation = parse_create(response.status_code, response.headers, response.content)
    return conversation, merged_set_cookies(cookies, response.headers.get_list("set-cookie"))


async def upload_image(
    http: httpx.AsyncClient,
    endpoints: BingEndpoints,
    data: bytes,
    *,
    cookies: Mapping[str, str] | None = None,
    tone: str = "Creative",
    http_timeout: float = UPLOAD_TIMEOUT,
) -> str:
    """Upload an image to kblob; its chat URL (`endpoints.blob_url(blobId)`). SydneyQt sends no
    cookies here; pass `cookies` to send them. Raises UploadRejected (no blobId) or
    BingUnavailable (transport error, non-200 with `.status`, or a non-JSON answer)."""
    content_type, body = kblob_form(data, tone)
    headers = {
        "Content-Type": content_type,
        "Referer": KBLOB_REFERER,
        "User-Agent": EDGE_USER_AGENT,
        "Cookie": format_cookies(cookies) if cookies else "",
    }
    try:
        response = await http.post(endpoints.kblob_url, content=body, headers=headers, timeout=http_timeout)
    except httpx.HTTPError as exc:
        raise BingUnavailable(f"image upload failed: {type(exc).__name__}") from None
    return endpoints.blob_url(parse_kblob(response.status_code, response.content))


def _closed(exc: ConnectionClosed) -> ChatClosed:
    code = exc.rcvd.code if exc.rcvd is not None else None
    if code is None:
        return ChatClosed("the chat socket ended before the answer did (no close frame)")
    hint = "; please check if the chat context is too long" if code == 1000 else ""  # SydneyQt's hint
    return ChatClosed(f"the chat socket closed before the answer ended (code {code}){hint}", code)


class ChatSession:
    """One chat turn over one ChatHub websocket: `open()`, then iterate the TurnItems; the socket
    is closed before the turn's last item (TurnEnd / TurnFailed) is returned, on any error, and by
    `aclose()` (also `async with`). Raises ChatClosed, ChatTimeout, ChatRefused, BingUnavailable,
    MalformedFrame."""

    def __init__(
        self,
        endpoints: BingEndpoints,
        conversation: Conversation,
        cookies: Mapping[str, str],
        invocation: dict[str, Any],
        *,
        proxy: str | None,
        reader: TurnReader,
        read_timeout: float = 30.0,
        open_timeout: float = 10.0,
    ) -> None:
        self._url = chathub_url(endpoints.chathub_url, conversation.sec_access_token)
        self._cookies = cookies
        self._invocation = invocation
        self._proxy = proxy
        self._reader = reader
        self._read_timeout = read_timeout
        self._open_timeout = open_timeout
        self._ws: ClientConnection | None = None
        self._pending: collections.deque[TurnItem] = collections.deque()
        self._last_ping = 0.0

    @property
    def reader(self) -> TurnReader:
        return self._reader

    async def open(self) -> None:
        """Connect, run the SignalR handshake, send the first ping and the invocation."""
        try:
            self._ws = await connect(
                self._url,
                additional_headers=upgrade_headers(self._cookies),
                user_agent_header=EDGE_USER_AGENT,
                proxy=self._proxy,
                open_timeout=self._open_timeout,
                close_timeout=CLOSE_TIMEOUT,
                ping_interval=None,  # keep-alive is SignalR's type:6, sent by this class
                max_size=MAX_MESSAGE_BYTES,
                compression=None,  # permessage-deflate costs CPU on every frame of both sides
            )
        except InvalidStatus as exc:
            raise ChatRefused(exc.response.status_code) from None
        except TimeoutError:
            raise ChatTimeout(f"the chat socket did not open within {self._open_timeout:g} s") from None
        except (OSError, WebSocketException) as exc:
            raise BingUnavailable(f"cannot open the chat socket: {type(exc).__name__}") from None
        try:
            await self._send(signalr.HANDSHAKE)
            records = signalr.split_records(await self._recv())
            # The reply is `{}`; SydneyQt ignores what it holds. Records batched after it are the turn's.
            if records and "type" not in records[0]:
                handshake = records.pop(0)
                if "error" in handshake:
                    raise ChatClosed(f"the chat handshake failed: {str(handshake['error'])[:200]}")
            self._feed(records)
            await self._send(signalr.PING)
            self._last_ping = asyncio.get_running_loop().time()
            await self._send(signalr.encode(self._invocation))
        except BaseException:
            await self.aclose()
            raise

    def __aiter__(self) -> ChatSession:
        return self

    async def __anext__(self) -> TurnItem:
        try:
            while not self._pending:
                if self._reader.done or self._ws is None:
                    await self.aclose()
                    raise StopAsyncIteration
                await self._read_once()
        except BaseException:
            await self.aclose()
            raise
        item = self._pending.popleft()
        if self._reader.done and not self._pending:
            await self.aclose()  # the turn's last item: the socket is closed before anyone sees it
        return item

    async def aclose(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close()

    async def __aenter__(self) -> ChatSession:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _read_once(self) -> None:
        records = signalr.split_records(await self._recv())
        self._feed(records)
        if self._reader.done:
            return
        now = asyncio.get_running_loop().time()
        since = now - self._last_ping
        if since >= PING_INTERVAL or (since >= PING_ANSWER_GAP and any(r.get("type") == 6 for r in records)):
            await self._send(signalr.PING)
            self._last_ping = now

    def _feed(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            self._pending.extend(self._reader.feed(record))
            if self._reader.done:
                return  # SydneyQt stops at the type:2 record; what follows it (type:3) is not read

    async def _recv(self) -> str:
        assert self._ws is not None
        while True:
            try:
                async with asyncio.timeout(self._read_timeout):
                    frame = await self._ws.recv()
            except TimeoutError:
                raise ChatTimeout(f"no message from the chat socket for {self._read_timeout:g} s") from None
            except ConnectionClosed as exc:
                raise _closed(exc) from None
            if isinstance(frame, str):
                return frame
            # binary frames carry nothing in this protocol; SydneyQt skips them too

    async def _send(self, text: str) -> None:
        assert self._ws is not None
        try:
            async with asyncio.timeout(WRITE_TIMEOUT):
                await self._ws.send(text)
        except TimeoutError:
            raise ChatTimeout(f"a write to the chat socket took over {WRITE_TIMEOUT:g} s") from None
        except ConnectionClosed as exc:
            raise _closed(exc) from None


async def chat(
    endpoints: BingEndpoints,
    conversation: Conversation,
    cookies: Mapping[str, str],
    invocation: dict[str, Any],
    *,
    proxy: str | None,
    reader: TurnReader,
    read_timeout: float = 30.0,
    open_timeout: float = 10.0,
) -> AsyncGenerator[TurnItem, None]:
    """The items of one chat turn, as they arrive (see ChatSession). Stopping early (`aclose()`,
    `break` out of an `async with contextlib.aclosing(...)`) closes the socket."""
    session = ChatSession(
        endpoints,
        conversation,
        cookies,
        invocation,
        proxy=proxy,
        reader=reader,
        read_timeout=read_timeout,
        open_timeout=open_timeout,
    )
    try:
        await session.open()
        async for item in session:
            yield item
    finally:
        with contextlib.suppress(Exception):
            await session.aclose()
