"""Known workloads and what the reference says they count to."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from tcflow.host.sandbox import VethPair
from tests.support.cases import cases, fragmented_udp
from tests.support.reference import classify
from tests.traffic_gen.frames import send_frames

# Every crafted frame both hooks see alike, and two fragmented datagrams.
FRAMES = [c.frame for c in cases() if not c.tc_only] + fragmented_udp("ipv4", 3001) + fragmented_udp("ipv6", 3001)


def totals(frames: list[bytes], direction: str) -> tuple[Counter, Counter]:
    b: Counter = Counter()
    p: Counter = Counter()
    for f in frames:
        fb, fp = classify(f, direction)
        b.update(fb)
        p.update(fp)
    return +b, +p


RECV_B, RECV_P = totals(FRAMES, "recv")
SEND_B, SEND_P = totals(FRAMES, "send")


def key(p: VethPair) -> str:
    """The JSON key (and CLI target) of the attached end of a pair."""
    return f"{p.ns_a}/{p.dev_a}"


def both_ways(p: VethPair) -> None:
    send_frames(p.ns_b, p.dev_b, FRAMES)  # arrive on A: recv
    send_frames(p.ns_a, p.dev_a, FRAMES)  # leave A: send


def settle(m: Any, key: str) -> Any:
    """Counters once two reads a little apart agree (frames are in flight).
    ``m`` is anything with snapshot(): a Monitor or an Agent."""
    last = None
    for _ in range(50):
        cur = m.snapshot().interfaces[key]
        if last is not None and cur.bytes == last.bytes:
            return cur
        last = cur
        time.sleep(0.05)
    return cur
