"""A multipart/form-data body read as it arrives, bounded: SydneyQt's image upload form.

The body goes through python-multipart's streaming parser chunk by chunk, so a part split across
reads (a slow client, a small TCP window) is whole all the same, and the limit is counted on the
wire bytes as `asgi_io.read_body` counts them: a Content-Length over it is refused before a byte
is read, a body that grows past it as soon as it does (413 request_too_large either way). Only the
parts asked for are kept (the first of each name); any other part is parsed and dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.types import Receive, Scope

from libs.errors import BodyTooLarge, InvalidRequest
from services.edge.asgi_io import header


@dataclass
class Form:
    parts: dict[str, bytes] = field(default_factory=dict)  # name -> its bytes (the first part of that name)


class _Collector:
    """The parser's callbacks: each part's headers, then its data into the part's sink (or nowhere)."""

    def __init__(self, wanted: frozenset[str]) -> None:
        self.wanted = wanted
        self.chunks: dict[str, list[bytes]] = {}
        self.ended = False
        self._field = b""
        self._value = b""
        self._disposition = b""
        self._sink: list[bytes] | None = None

    def part_begin(self) -> None:
        self._disposition = b""
        self._sink = None

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def header_end(self) -> None:
        if self._field.lower() == b"content-disposition":
            self._disposition = self._value
        self._field = self._value = b""

    def headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        name = options.get(b"name", b"").decode("latin-1")
        if name in self.wanted and name not in self.chunks:
            self._sink = self.chunks[name] = []

    def part_data(self, data: bytes, start: int, end: int) -> None:
        if self._sink is not None:
            self._sink.append(data[start:end])

    def end(self) -> None:
        self.ended = True


def _not_multipart(param: str) -> InvalidRequest:
    return InvalidRequest(f"The request must be multipart/form-data with a '{param}' part.", param=param,
                          code="invalid_value")


async def read_form(scope: Scope, receive: Receive, limit: int, wanted: frozenset[str], param: str) -> Form:
    """The `wanted` parts of a multipart/form-data body of at most `limit` bytes. A body that is not
    multipart/form-data, or is malformed or cut short, is a 400 naming `param`."""
    content_type, options = parse_options_header(header(scope, b"content-type"))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise _not_multipart(param)
    length = header(scope, b"content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise BodyTooLarge(f"The request body exceeds the limit of {limit} bytes.")
    collector = _Collector(wanted)
    try:
        parser = MultipartParser(boundary, {
            "on_part_begin": collector.part_begin, "on_header_field": collector.header_field,
            "on_header_value": collector.header_value, "on_header_end": collector.header_end,
            "on_headers_finished": collector.headers_finished, "on_part_data": collector.part_data,
            "on_end": collector.end,
        })
    except FormParserError:  # a boundary longer than RFC 2046 allows
        raise _not_multipart(param) from None
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise InvalidRequest("the client disconnected while sending the body")
        body = message.get("body", b"")
        size += len(body)
        if size > limit:
            raise BodyTooLarge(f"The request body exceeds the limit of {limit} bytes.")
        if body and not collector.ended:
            try:
                parser.write(body)
            except FormParserError:
                raise InvalidRequest("The multipart/form-data body is malformed.", param=param,
                                     code="invalid_value") from None
        if not message.get("more_body", False):
            break
    if not collector.ended:
        raise InvalidRequest("The multipart/form-data body ends before its closing boundary.", param=param,
                             code="invalid_value")
    return Form({name: b"".join(chunks) for name, chunks in collector.chunks.items()})
