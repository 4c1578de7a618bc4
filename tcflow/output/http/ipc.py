"""The connection between the agent and its HTTP front (a socketpair): one
frame a message, a JSON header and a body, each behind its 4-byte length.

The front asks (its frames have an empty body):
  {"id": N, "op": "get", "method": "GET", "target": "/metrics?x", "accept_encoding": "gzip"}
  {"id": N, "op": "web", "version": V}
and the agent answers with the same id:
  {"id": N, "code": 200, "ctype": "...", "headers": {...}} + the reply's body
  {"id": N, "version": V2, "files": {path: base64, ...}} (files only when V2 != V)

The agent trusts nothing the front sends (it may be compromised): JSON
only, sizes bounded, every field checked (server.py); no pickle anywhere.
"""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any

MAX_HEADER = 64 * 1024
MAX_BODY = 256 * 1024 * 1024  # a reply: /metrics of a very large node
_LEN = struct.Struct("!I")


def frame(header: dict[str, Any], body: bytes = b"") -> bytes:
    h = json.dumps(header, separators=(",", ":")).encode()
    return _LEN.pack(len(h)) + h + _LEN.pack(len(body)) + body


async def read_frame(reader: asyncio.StreamReader, max_body: int = MAX_BODY) -> tuple[dict[str, Any], bytes]:
    """One frame; ValueError if it breaks the limits or is not a JSON object."""
    (n,) = _LEN.unpack(await reader.readexactly(4))
    if n > MAX_HEADER:
        raise ValueError("frame header too large")
    header = json.loads(await reader.readexactly(n))
    (m,) = _LEN.unpack(await reader.readexactly(4))
    if m > max_body:
        raise ValueError("frame body too large")
    body = await reader.readexactly(m) if m else b""
    if not isinstance(header, dict):
        raise ValueError("frame header is not an object")
    return header, body
