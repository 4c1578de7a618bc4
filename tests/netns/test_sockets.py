"""Real sockets: the L4 classes equal what the sockets moved, exactly."""

from __future__ import annotations

import socket

import pytest

import tcflow
from tcflow.host.sandbox import VethPair, run
from tests.support.counting import settle
from tests.traffic_gen.sockets import tcp_exchange, udp_exchange

PRIME = 31


@pytest.mark.parametrize("ingress", ["xdp", "tc"])
@pytest.mark.parametrize("family", ["V4", "V6"])
def test_tcp_payload_equals_socket_bytes(veth_pair: VethPair, ingress: str, family: str) -> None:
    p = veth_pair
    fam, addr = (socket.AF_INET, p.ip4_b) if family == "V4" else (socket.AF_INET6, p.ip6_b)
    with tcflow.Monitor([p.dev_a], netns=p.ns_a, ingress=ingress) as m:
        sent, got = tcp_exchange(p.ns_a, p.ns_b, fam, addr, PRIME, 1013, 577)
        c = m.snapshot().interfaces[f"{p.ns_a}/{p.dev_a}"]
    assert (sent, got) == (PRIME * 1013, PRIME * 577)
    assert c.bytes[f"L4_TCP_SEND_{family}"] == sent
    assert c.bytes[f"L4_TCP_RECV_{family}"] == got
    other = "V6" if family == "V4" else "V4"
    assert c.bytes[f"L4_TCP_SEND_{other}"] == c.bytes[f"L4_TCP_RECV_{other}"] == 0


@pytest.mark.parametrize("ingress", ["xdp", "tc"])
@pytest.mark.parametrize("family", ["V4", "V6"])
@pytest.mark.parametrize("size", [211, 3001], ids=["small", "fragmented"])
def test_udp_payload_equals_socket_bytes(veth_pair: VethPair, ingress: str, family: str, size: int) -> None:
    p = veth_pair
    fam, a, b = (socket.AF_INET, p.ip4_a, p.ip4_b) if family == "V4" else (socket.AF_INET6, p.ip6_a, p.ip6_b)
    with tcflow.Monitor([p.dev_a], netns=p.ns_a, ingress=ingress) as m:
        sent, got = udp_exchange(p.ns_a, p.ns_b, fam, a, b, 13, size, 7, size + 2)
        c = m.snapshot().interfaces[f"{p.ns_a}/{p.dev_a}"]
    assert c.bytes[f"L4_UDP_SEND_{family}"] == sent == 13 * size
    assert c.bytes[f"L4_UDP_RECV_{family}"] == got == 7 * (size + 2)
    if size > 1500:  # fragmented on the wire: more packets than datagrams
        assert c.packets[f"L3_UDP_SEND_{family}"] == 13 * 3


@pytest.mark.parametrize("ingress", ["xdp", "tc"])
def test_icmp_echo_is_raw(veth_pair: VethPair, ingress: str) -> None:
    p = veth_pair
    with tcflow.Monitor([p.dev_a], netns=p.ns_a, ingress=ingress) as m:
        p.exec_a("ping", "-c", "5", "-i", "0.05", "-s", "100", "-W", "2", p.ip4_b)
        c = m.snapshot().interfaces[f"{p.ns_a}/{p.dev_a}"]
    # 5 echo requests out, 5 replies in: 20 + 8 + 100 IP bytes each
    assert c.bytes["L3_RAW_SEND_V4"] == 5 * 128
    assert c.bytes["L3_RAW_RECV_V4"] == 5 * 128
    assert c.packets["L3_RAW_SEND_V4"] == 5


def _recv_packets(c: tcflow.InterfaceCounters) -> int:
    """Every packet the recv hook counted, once (L4 classes count the L3 ones again)."""
    return sum(c.packets[k.name] for k in tcflow.CLASSES if k.direction == "recv" and k.layer != "L4")


def _tx_packets(ns: str, dev: str) -> int:
    return int(run("ip", "netns", "exec", ns, "cat", f"/sys/class/net/{dev}/statistics/tx_packets"))


@pytest.mark.parametrize("ingress", ["xdp", "tc"])
def test_looped_back_multicast_and_broadcast_copies_count_nowhere(veth_pair: VethPair, ingress: str) -> None:
    """SPEC: the host's own copy of a multicast/broadcast send, looped back
    through the same device, never was on the wire. Recv counts exactly the
    packets the peer put on the veth (its tx_packets), nothing more."""
    p = veth_pair
    k = f"{p.ns_a}/{p.dev_a}"
    with tcflow.Monitor([p.dev_a], netns=p.ns_a, ingress=ingress) as m:
        tx0, c0 = _tx_packets(p.ns_b, p.dev_b), m.snapshot().interfaces[k]
        for argv in (("ping", "-6", "-c", "2", "-i", "0.2", "-W", "1", f"ff02::1%{p.dev_a}"),
                     ("ping", "-b", "-c", "2", "-i", "0.2", "-W", "1", "198.18.0.255")):
            run("ip", "netns", "exec", p.ns_a, *argv, check=False)  # the broadcast gets no answer: exit 1
        for _ in range(50):  # until both sides agree twice in a row, or give up
            c1 = settle(m, k)
            tx1 = _tx_packets(p.ns_b, p.dev_b)
            if _recv_packets(c1) - _recv_packets(c0) == tx1 - tx0:
                break
    assert c1.packets["OTHER_RECV"] == c1.bytes["OTHER_RECV"] == 0
    assert c1.packets["MALFORMED_RECV"] == 0
    assert c1.packets["L3_RAW_SEND_V6"] - c0.packets["L3_RAW_SEND_V6"] >= 2  # the multicast pings went out
    assert c1.packets["L3_RAW_SEND_V4"] - c0.packets["L3_RAW_SEND_V4"] >= 2  # the broadcast ones too
    assert _recv_packets(c1) - _recv_packets(c0) == tx1 - tx0
