"""(c): one TCP transfer with TSO/GSO off and on. L4 is the bytes sent either
way; L3 is checked against the pcap of the same interface and the sender's
TCP OutSegs, counts tcflow did not make."""

from __future__ import annotations

import math
import os
import socket
import struct
import subprocess
import tempfile
import time

import pytest

import tcflow
from tcflow.host.sandbox import VethPair
from tests.support.pcap import capture, drain
from tests.traffic_gen.sockets import bulk_send

TOTAL = 1_000_003  # a prime number of bytes
TCP_INFO, TCPI_SND_MSS_OFFSET = 11, 16


def out_segs(ns: str) -> int:
    text = subprocess.run(["ip", "netns", "exec", ns, "cat", "/proc/net/snmp"],
                          capture_output=True, text=True, check=True).stdout
    tcp = [ln.split() for ln in text.splitlines() if ln.startswith("Tcp:")]
    return int(tcp[1][tcp[0].index("OutSegs")])


@pytest.mark.parametrize("offload", ["off", "on"])
def test_tcp_gso_l3_matches_pcap_and_snmp(veth_pair: VethPair, offload: str) -> None:
    p = veth_pair
    p.exec_a("ethtool", "-K", p.dev_a, "tso", offload, "gso", offload)
    with tempfile.TemporaryDirectory() as tmp, tcflow.Monitor([p.dev_a], netns=p.ns_a, ingress="tc") as m:
        pcap = os.path.join(tmp, "a.pcap")
        segs0 = out_segs(p.ns_a)
        cap = capture(p.ns_a, p.dev_a, pcap)
        mss = bulk_send(p.ns_a, p.ns_b, p.ip4_b, TOTAL,
                        lambda s: struct.unpack_from("I", s.getsockopt(socket.IPPROTO_TCP, TCP_INFO, 104),
                                                     TCPI_SND_MSS_OFFSET)[0])
        time.sleep(0.3)
        c = m.snapshot().interfaces[f"{p.ns_a}/{p.dev_a}"]
        segs = out_segs(p.ns_a) - segs0
        frames = drain(cap, pcap)

    assert c.bytes["L4_TCP_SEND_V4"] == TOTAL
    # Each captured skb: IP bytes, and the wire packets it stands for.
    l3_expect, aggregates = 0, 0
    for f, orig_len in frames:
        ihl = (f[14] & 0xF) * 4
        thl = (f[14 + ihl + 12] >> 4) * 4
        ip_len = orig_len - 14
        payload = ip_len - ihl - thl
        n = max(1, math.ceil(payload / mss))
        aggregates += n > 1
        l3_expect += ip_len + (n - 1) * (ihl + thl)
    assert c.bytes["L3_TCP_SEND_V4"] == l3_expect
    assert c.packets["L3_TCP_SEND_V4"] == segs  # the kernel's own segment count
    if offload == "off":
        assert aggregates == 0 and len(frames) == segs
    else:
        assert aggregates > 0  # the case under test did happen
