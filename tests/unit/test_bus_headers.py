"""libs.bus.BusClient reads message headers exactly as nats-py does, only quicker."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nats.aio.client import Client as NATS

from libs.bus import BusClient

_PIECES = [b"Sy-Request-Id", b"Nats-Msg-Id", b":", b": ", b"\r\n", b" ", b"\t", b"\x1c", b"\xc3\xbc", b"\xff",
           b"value", b"a.b-c_1", b"", b"NATS/1.0", b"\x00"]


@pytest.mark.parametrize("raw", [
    b"Sy-Request-Id: req-1\r\nNats-Msg-Id: j1\r\n\r\n",
    b"Name:Value\r\nOther:\tspaced  \r\n",
    b"Bad Name: x\r\nGood: y\r\n",
    b": empty name\r\nno colon here\r\n",
    b"K\xc3\xbc: non-ascii name\r\nV: \xc3\xbc \xff\r\n",
    b"Dup: 1\r\nDup: 2\r\n",
    b"Sep\x1cName: x\r\n",
    b"",
])
def test_the_same_headers_as_nats_py(raw: bytes) -> None:
    assert BusClient._parse_header_lines(raw) == NATS._parse_header_lines(raw)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(_PIECES), st.binary(max_size=6)), max_size=24))
def test_the_same_headers_as_nats_py_for_any_bytes(pieces: list[bytes]) -> None:
    raw = b"".join(pieces)
    assert BusClient._parse_header_lines(raw) == NATS._parse_header_lines(raw)
