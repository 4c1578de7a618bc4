"""(b) + (d): real sockets; the L4 classes equal what the sockets moved, exactly."""

from __future__ import annotations

import socket

import pytest

import tcflow
from tests.netns.conftest import VethPair
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
        p.exec_a(f"ping -c 5 -i 0.05 -s 100 -W 2 {p.ip4_b}")
        c = m.snapshot().interfaces[f"{p.ns_a}/{p.dev_a}"]
    # 5 echo requests out, 5 replies in: 20 + 8 + 100 IP bytes each
    assert c.bytes["L3_RAW_SEND_V4"] == 5 * 128
    assert c.bytes["L3_RAW_RECV_V4"] == 5 * 128
    assert c.packets["L3_RAW_SEND_V4"] == 5
