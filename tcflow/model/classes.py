"""The counter classes: the one list of them, and every name each one goes by.

The first 14 entries keep the seed (kprobe) design's numbering, which users of
the old ``/traffic`` endpoint rely on; docs/SPEC.md fixes it. Extended classes
are appended after them and never renumber the 14.

Everything else takes the classes from here: the C program gets each class's
counter cell as a compile-time define (``cflags()``), the JSON keys are ``name``, the
table shows ``title``, the metrics use ``layer``/``protocol``/``direction``/
``family`` as labels, and the dashboard asks the server (``catalogue()``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

FAMILIES = (("ipv4", "V4"), ("ipv6", "V6"))
SEED_ROWS = (("L4", "tcp", "send"), ("L4", "tcp", "recv"), ("L4", "udp", "send"), ("L4", "udp", "recv"),
             ("L3", "tcp", "send"), ("L3", "udp", "send"), ("L3", "raw", "send"))
APART = {"OTHER": "non_ip", "LOCAL": "local", "MALFORMED": "malformed"}
PROTOCOL_WORDS = {"tcp": "TCP", "udp": "UDP", "raw": "other"}
DIRECTION_WORDS = {"send": "sent", "recv": "received"}


@dataclass(frozen=True)
class CounterClass:
    """One counter class.

    ``layer`` is "L4" (TCP/UDP payload bytes), "L3" (IP bytes) or None for
    the classes that count what is kept out of the others, whose ``reason``
    is "non_ip", "local" or "malformed". ``protocol`` is "tcp", "udp" or
    "raw" (any other IP protocol); ``family`` "ipv4" or "ipv6"; both None for
    the apart classes. ``direction`` is "send" or "recv".
    """

    index: int
    name: str
    layer: Optional[str]
    protocol: Optional[str]
    direction: str
    family: Optional[str]
    reason: Optional[str] = None

    @property
    def seed(self) -> bool:
        """True for the 14 classes of the seed design (fixed numbering)."""
        return self.index < SEED_COUNT

    @property
    def stem(self) -> str:
        """The name without its family suffix: one row of the table."""
        return self.name[:-3] if self.family else self.name

    @property
    def title(self) -> str:
        """How a person reads it: "TCP payload sent", "IP bytes received, UDP"."""
        if self.layer is None:
            return f"{self.reason} {DIRECTION_WORDS[self.direction]}".replace("_", "-")
        proto = PROTOCOL_WORDS[str(self.protocol)]
        if self.layer == "L4":
            return f"{proto} payload {DIRECTION_WORDS[self.direction]}"
        return f"IP bytes {DIRECTION_WORDS[self.direction]}, {proto}"

    @property
    def protocol_label(self) -> str:
        """The metrics' ``protocol`` label: "tcp", "udp" or "other"."""
        return "other" if self.protocol == "raw" else str(self.protocol)


def _build() -> tuple[CounterClass, ...]:
    out: list[CounterClass] = []
    for fam, suffix in FAMILIES:
        for layer, proto, direction in SEED_ROWS:
            name = f"{layer}_{proto.upper()}_{direction.upper()}_{suffix}"
            out.append(CounterClass(len(out), name, layer, proto, direction, fam))
    for fam, suffix in FAMILIES:
        for proto in ("tcp", "udp", "raw"):
            out.append(CounterClass(len(out), f"L3_{proto.upper()}_RECV_{suffix}", "L3", proto, "recv", fam))
    for kind, reason in APART.items():
        for direction in ("recv", "send"):
            out.append(CounterClass(len(out), f"{kind}_{direction.upper()}", None, None, direction, None, reason))
    return tuple(out)


SEED_COUNT = 14
CLASSES: tuple[CounterClass, ...] = _build()
NUM_CLASSES = len(CLASSES)


def _cells() -> dict[str, int]:
    """Where each class's {bytes, packets} pair sits in a slot's counters.

    Not the class index: a TCP or UDP packet adds to its payload class and
    its IP-bytes class, and those two are neighbours here (one 32-byte
    stretch), so the datapath writes one place, not two cache lines apart."""
    order: list[str] = []
    for _fam, suffix in FAMILIES:
        for proto in ("TCP", "UDP"):
            for direction in ("SEND", "RECV"):
                order += [f"L4_{proto}_{direction}_{suffix}", f"L3_{proto}_{direction}_{suffix}"]
    order += [c.name for c in CLASSES if c.name not in order]
    return {name: i for i, name in enumerate(order)}


CELL: dict[str, int] = _cells()
BY_NAME: dict[str, CounterClass] = {c.name: c for c in CLASSES}
SEED_NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES[:SEED_COUNT])
NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES)


def find(layer: Optional[str], protocol: Optional[str], direction: str, family: Optional[str]) -> CounterClass:
    """The class with these attributes (the L4 ones exist for tcp and udp only)."""
    for c in CLASSES:
        if (c.layer, c.protocol, c.direction, c.family) == (layer, protocol, direction, family):
            return c
    raise KeyError((layer, protocol, direction, family))


def apart(reason: str, direction: str) -> CounterClass:
    """The class for ``non_ip``, ``local`` or ``malformed`` traffic in one direction."""
    for c in CLASSES:
        if c.reason == reason and c.direction == direction:
            return c
    raise KeyError((reason, direction))


def cflags() -> list[str]:
    """Each class's counter cell as a C define: ``-DC_L4_TCP_SEND_V4=0`` ... ``-DNUM_CLASSES=26``."""
    return [f"-DC_{c.name}={CELL[c.name]}" for c in CLASSES] + [f"-DNUM_CLASSES={NUM_CLASSES}"]


def catalogue() -> list[dict[str, Any]]:
    """Every class with its attributes, as plain data (the dashboard's ``/classes``)."""
    return [{"index": c.index, "name": c.name, "title": c.title, "layer": c.layer, "protocol": c.protocol,
             "direction": c.direction, "family": c.family, "reason": c.reason, "seed": c.seed} for c in CLASSES]
