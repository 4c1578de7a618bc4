"""(a) + (d): crafted frames over a veth, exact per-class bytes on both hooks."""

from __future__ import annotations

import time
from collections import Counter

import pytest

import tcflow
from tests.netns.conftest import VethPair
from tests.traffic_gen.frames import cases, fragmented_udp
from tests.traffic_gen.inject import send_frames
from tests.traffic_gen.reference import classify

FRAMES = [c.frame for c in cases() if not c.tc_only] + fragmented_udp("ipv4", 3001) + fragmented_udp("ipv6", 3001)


def totals(frames: list[bytes], direction: str) -> tuple[Counter, Counter]:
    b: Counter = Counter()
    p: Counter = Counter()
    for f in frames:
        fb, fp = classify(f, direction)
        b.update(fb)
        p.update(fp)
    return +b, +p


def settle(m: tcflow.Monitor, key: str) -> tcflow.InterfaceCounters:
    """Counters once two reads a little apart agree (frames are in flight)."""
    last = None
    for _ in range(50):
        cur = m.snapshot().interfaces[key]
        if last is not None and cur.bytes == last.bytes:
            return cur
        last = cur
        time.sleep(0.05)
    return cur


@pytest.mark.parametrize("ingress", ["xdp", "tc"])
def test_injected_frames_exact_both_directions(silent_pair: VethPair, ingress: str) -> None:
    p = silent_pair
    with tcflow.Monitor([p.dev_a], netns=p.ns_a, ingress=ingress) as m:
        key = f"{p.ns_a}/{p.dev_a}"
        assert m.snapshot().interfaces[key].hooks["ingress"] == ingress
        send_frames(p.ns_b, p.dev_b, FRAMES)  # arrive on A: recv
        send_frames(p.ns_a, p.dev_a, FRAMES)  # leave A: send
        got = settle(m, key)
    recv_b, recv_p = totals(FRAMES, "recv")
    send_b, send_p = totals(FRAMES, "send")
    assert +Counter(got.bytes) == recv_b + send_b
    assert +Counter(got.packets) == recv_p + send_p
    # the seed classes were all exercised, in both directions
    assert all(got.bytes[n] > 0 for n in tcflow.SEED_NAMES if "TCP_RECV" not in n or "L4" in n)
