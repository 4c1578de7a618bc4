"""Read a PNG (as Chromium's screenshots write them: 8-bit RGB or RGBA, not
interlaced) into rows of pixels, so that a test can check what a screenshot
shows. Only the standard library."""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass


@dataclass
class Image:
    width: int
    height: int
    channels: int
    data: bytes  # rows of width * channels bytes, filters undone

    def pixel(self, x: int, y: int) -> tuple[int, int, int]:
        o = (y * self.width + x) * self.channels
        return self.data[o], self.data[o + 1], self.data[o + 2]

    def count(self, box: tuple[int, int, int, int], rgb: tuple[int, int, int], tolerance: int = 24) -> int:
        """Pixels in box (x, y, w, h) within ``tolerance`` of ``rgb`` in each channel."""
        x0, y0, w, h = box
        n = 0
        for y in range(max(0, y0), min(self.height, y0 + h)):
            for x in range(max(0, x0), min(self.width, x0 + w)):
                p = self.pixel(x, y)
                if all(abs(a - b) <= tolerance for a, b in zip(p, rgb, strict=True)):
                    n += 1
        return n


def read(path: str) -> Image:
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path}: not a PNG")
    pos, idat, header = 8, [], b""
    while pos < len(raw):
        (length,) = struct.unpack(">I", raw[pos:pos + 4])
        kind, body = raw[pos + 4:pos + 8], raw[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    width, height, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", header)
    if depth != 8 or ctype not in (2, 6) or interlace:
        raise ValueError(f"{path}: only 8-bit RGB/RGBA, not interlaced (depth {depth}, type {ctype})")
    ch = 3 if ctype == 2 else 4
    stride = width * ch
    src = zlib.decompress(b"".join(idat))
    out = bytearray(height * stride)
    prev = bytearray(stride)
    for y in range(height):
        f, line = src[y * (stride + 1)], bytearray(src[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - ch] if i >= ch else 0
            b = prev[i]
            c = prev[i - ch] if i >= ch else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        out[y * stride:(y + 1) * stride] = line
        prev = line
    return Image(width, height, ch, bytes(out))
