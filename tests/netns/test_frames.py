"""Crafted frames over a veth: exact per-class bytes on both hooks, against the reference."""

from __future__ import annotations

from collections import Counter

import pytest

import tcflow
from tcflow.host.sandbox import VethPair
from tests.support.counting import FRAMES, settle, totals
from tests.traffic_gen.frames import send_frames


@pytest.mark.parametrize("ingress", ["xdp", "tc"])
def test_injected_frames_exact_both_directions(silent_pair: VethPair, ingress: str) -> None:
    p = silent_pair
    with tcflow.Monitor([p.dev_a], netns=p.ns_a, ingress=ingress) as m:
        key = f"{p.ns_a}/{p.dev_a}"
        assert m.snapshot().interfaces[key].hooks.ingress == ingress
        send_frames(p.ns_b, p.dev_b, FRAMES)  # arrive on A: recv
        send_frames(p.ns_a, p.dev_a, FRAMES)  # leave A: send
        got = settle(m, key)
    recv_b, recv_p = totals(FRAMES, "recv")
    send_b, send_p = totals(FRAMES, "send")
    assert +Counter(got.bytes) == recv_b + send_b
    assert +Counter(got.packets) == recv_p + send_p
    # the seed classes were all exercised, in both directions
    assert all(got.bytes[n] > 0 for n in tcflow.SEED_NAMES if "TCP_RECV" not in n or "L4" in n)
