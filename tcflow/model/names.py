r"""Names the kernel hands out (interfaces, namespaces) are bytes, and any
local user, a container's root included, picks them: not UTF-8, with escape
sequences or newlines in them.

Inside tcflow a name is a ``str`` that round-trips to the kernel's bytes
exactly (``os.fsdecode``/``os.fsencode``, surrogate escapes for bytes that
are not UTF-8), so matching and lookups are exact. Wherever a name is shown
(the terminal, stderr, JSON, metric labels) it goes through ``shown()``:
printable text stays as it is, anything else becomes ``\xNN``.
"""

from __future__ import annotations

import os
from typing import Union

_LOW, _HIGH = "\udc80", "\udcff"  # surrogate escapes: bytes that were not UTF-8


def from_kernel(name: Union[str, bytes]) -> str:
    """A name as netlink or the filesystem gave it, as tcflow keeps it."""
    return os.fsdecode(name) if isinstance(name, bytes) else name


def shown(name: str) -> str:
    r"""``name`` safe to print and to put in JSON or a label: printable
    characters as they are, the rest (control characters, bytes that were
    not UTF-8, a backslash itself) as ``\xNN`` of their bytes."""
    if name.isprintable() and "\\" not in name and not any(_LOW <= c <= _HIGH for c in name):
        return name
    out = []
    for c in name:
        if _LOW <= c <= _HIGH:
            out.append(f"\\x{ord(c) - 0xDC00:02x}")
        elif c == "\\" or not c.isprintable():
            out.extend(f"\\x{b:02x}" for b in c.encode("utf-8", "surrogateescape"))
        else:
            out.append(c)
    return "".join(out)


def parse(text: str) -> str:
    r"""A name as the user typed it: ``\xNN`` escapes (the form ``shown()``
    prints, so a shown name can be pasted back) become those bytes."""
    if "\\x" not in text:
        return text
    raw = os.fsencode(text)
    out = bytearray()
    i = 0
    while i < len(raw):
        if raw[i:i + 2] == b"\\x" and len(raw) >= i + 4:
            try:
                out.append(int(raw[i + 2:i + 4], 16))
                i += 4
                continue
            except ValueError:
                pass
        out.append(raw[i])
        i += 1
    return os.fsdecode(bytes(out))


def printable(text: str) -> str:
    r"""A line for the terminal: control characters and undecodable bytes
    as ``\xNN``, everything else (backslashes included) left alone. The last
    guard on stderr, for text that came from somewhere tcflow did not shape."""
    if text.isprintable() and not any(_LOW <= c <= _HIGH for c in text):
        return text
    return "".join(c if c.isprintable() and not _LOW <= c <= _HIGH else shown(c) for c in text)
