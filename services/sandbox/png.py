"""A tiny PNG encoder (RGB, 8 bits per channel) and the sandbox's deterministic test pictures.

Images must be real (clients decode them) and cheap (a 1024x1024 answer is generated per request), so
pictures are built from repeated byte runs, never pixel by pixel in Python.
"""

from __future__ import annotations

import random
import struct
import zlib

SIGNATURE = b"\x89PNG\r\n\x1a\n"
TILES = 8  # the tiles pattern is TILES x TILES flat colours (fewer when the image is smaller)
LEVEL = 1  # zlib level for the tiles: flat runs compress well even at the fastest level


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode(width: int, height: int, scanlines: bytes, level: int) -> bytes:
    """`scanlines`: `height` rows, each a filter byte (0: none) then width*3 RGB bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit truecolour, no interlace
    return SIGNATURE + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(scanlines, level)) + _chunk(b"IEND", b"")


def _spans(total: int, parts: int) -> list[int]:
    """`total` cut into `parts` near-equal lengths (the first ones take the remainder)."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def tiles(width: int, height: int, seed: int) -> bytes:
    """Flat colour tiles, each colour drawn from `seed`: the same seed gives the same picture."""
    rng = random.Random(seed)
    columns = _spans(width, min(TILES, width))
    rows: list[bytes] = []
    for tile_height in _spans(height, min(TILES, height)):
        line = b"\x00" + b"".join(rng.randbytes(3) * w for w in columns)
        rows.append(line * tile_height)
    return encode(width, height, b"".join(rows), LEVEL)


def noise(width: int, height: int, seed: int) -> bytes:
    """Random pixels: incompressible, so the PNG is ~width*height*3 bytes (stored, zlib level 0)."""
    pixels = random.Random(seed).randbytes(width * height * 3)
    row = width * 3
    scanlines = b"".join(b"\x00" + pixels[y * row : (y + 1) * row] for y in range(height))
    return encode(width, height, scanlines, 0)
