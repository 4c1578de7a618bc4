"""The counter classes: names, indices and labels.

The first 14 entries keep the seed (kprobe) design's numbering, which users of
the old ``/traffic`` endpoint rely on; SPEC.md fixes it. Extended classes are
appended after them and never renumber the 14. The C program includes no
Python, so ``tcflow/bpf/xdp_tc.c`` repeats these indices as ``#define``s; the
unit tests check that the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class CounterClass:
    """One counter class.

    ``layer`` is "L4" (payload bytes), "L3" (IP bytes) or None for the
    classes that count what is kept out of the others (other/local/malformed).
    ``protocol`` is "tcp", "udp" or "raw"; ``family`` "ipv4" or "ipv6"; both
    None for the apart classes. ``direction`` is "send" or "recv".
    """

    index: int
    name: str
    layer: Optional[str]
    protocol: Optional[str]
    direction: str
    family: Optional[str]

    @property
    def seed(self) -> bool:
        """True for the 14 classes of the seed design (fixed numbering)."""
        return self.index < SEED_COUNT


def _build() -> tuple[CounterClass, ...]:
    out: list[CounterClass] = []
    for fam, suffix in (("ipv4", "V4"), ("ipv6", "V6")):
        for layer, proto, direction in (
            ("L4", "tcp", "send"),
            ("L4", "tcp", "recv"),
            ("L4", "udp", "send"),
            ("L4", "udp", "recv"),
            ("L3", "tcp", "send"),
            ("L3", "udp", "send"),
            ("L3", "raw", "send"),
        ):
            name = f"{layer}_{proto.upper()}_{direction.upper()}_{suffix}"
            out.append(CounterClass(len(out), name, layer, proto, direction, fam))
    for fam, suffix in (("ipv4", "V4"), ("ipv6", "V6")):
        for proto in ("tcp", "udp", "raw"):
            name = f"L3_{proto.upper()}_RECV_{suffix}"
            out.append(CounterClass(len(out), name, "L3", proto, "recv", fam))
    for kind in ("OTHER", "LOCAL", "MALFORMED"):
        for direction in ("recv", "send"):
            name = f"{kind}_{direction.upper()}"
            out.append(CounterClass(len(out), name, None, None, direction, None))
    return tuple(out)


SEED_COUNT = 14
CLASSES: tuple[CounterClass, ...] = _build()
NUM_CLASSES = len(CLASSES)
BY_NAME: dict[str, CounterClass] = {c.name: c for c in CLASSES}
SEED_NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES[:SEED_COUNT])
NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES)


def l4_class(proto: str, direction: str, family: str) -> CounterClass:
    """The L4 payload class for a TCP or UDP packet."""
    suffix = "V4" if family == "ipv4" else "V6"
    return BY_NAME[f"L4_{proto.upper()}_{direction.upper()}_{suffix}"]


def l3_class(proto: str, direction: str, family: str) -> CounterClass:
    """The L3 (IP bytes) class; recv ones are extended classes."""
    suffix = "V4" if family == "ipv4" else "V6"
    return BY_NAME[f"L3_{proto.upper()}_{direction.upper()}_{suffix}"]


def apart_class(kind: str, direction: str) -> CounterClass:
    """``other``, ``local`` or ``malformed`` for one direction."""
    return BY_NAME[f"{kind.upper()}_{direction.upper()}"]
