"""The `GET /traffic` document: a Snapshot as JSON-ready plain data.

Per interface: the 14 classes by name (``classes``) and by the old numeric
index (``by_index``, "0".."13", what the kprobe design's endpoint served), the
extended classes (``extended``), packets of every class, and the hooks.
All values are cumulative since attach.
"""

from __future__ import annotations

from typing import Any

from ..classes import CLASSES, SEED_COUNT
from ..counters import Snapshot


def document(snap: Snapshot) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, ic in snap.interfaces.items():
        out[key] = {
            "interface": ic.ifname,
            "netns": ic.netns,
            "ifindex": ic.ifindex,
            "hook": dict(ic.hooks),
            "classes": {c.name: ic.bytes[c.name] for c in CLASSES[:SEED_COUNT]},
            "by_index": {str(c.index): ic.bytes[c.name] for c in CLASSES[:SEED_COUNT]},
            "extended": {c.name: ic.bytes[c.name] for c in CLASSES[SEED_COUNT:]},
            "packets": dict(ic.packets),
        }
    return {"time": round(snap.time, 6), "interfaces": out}
