"""The catalogue: a crafted frame for every parsing and counting case in SPEC.md.

Each Case has the frame bytes and, where a person can work the figure out,
``expect``: the exact bytes per class for the send direction (recv swaps
SEND for RECV). The reference classifier must agree with ``expect``, and the
BPF programs with the reference, so a slip in either shows.
Addresses are SPEC's test ranges only: 198.18.0.0/15 and 2001:db8::/32.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_NOP
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
)
from scapy.layers.ipsec import AH, ESP
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw

from tests.traffic_gen import frames
from tests.traffic_gen.frames import A4, A6, B4, B6, MAC_A, MAC_B, MAX_TEST_FRAME, eth, pl

__all__ = ["A4", "A6", "B4", "B6", "MAC_A", "MAC_B", "MAX_TEST_FRAME", "Case", "cases", "eth", "fragmented_udp",
           "hostile", "mutations", "pl"]


@dataclass
class Case:
    name: str
    frame: bytes
    expect: Optional[dict[str, int]] = None  # send-direction bytes per class
    segs: int = 1            # gso_segs (TC test runs only)
    include_local: bool = False
    tc_only: bool = False    # needs skb metadata XDP cannot carry
    packets: dict[str, int] = field(default_factory=dict)


TCP_OPTS = [("MSS", 1460), ("NOP", None), ("WScale", 7), ("SAckOK", b""), ("Timestamp", (1, 0))]


def cases() -> list[Case]:
    c: list[Case] = []
    add = c.append
    # plain classes, both families
    add(Case("v4_tcp", eth(IP(src=A4, dst=B4) / TCP(sport=1, dport=2, flags="PA") / pl(100)),
             {"L4_TCP_SEND_V4": 100, "L3_TCP_SEND_V4": 140}))
    add(Case("v4_tcp_options", eth(IP(src=A4, dst=B4, options=[IPOption_NOP()] * 4)
                                   / TCP(sport=1, dport=2, options=TCP_OPTS) / pl(50)),
             {"L4_TCP_SEND_V4": 50, "L3_TCP_SEND_V4": 24 + 40 + 50}))
    add(Case("v4_tcp_pure_ack", eth(IP(src=A4, dst=B4) / TCP(sport=1, dport=2, flags="A")),
             {"L4_TCP_SEND_V4": 0, "L3_TCP_SEND_V4": 40}))
    add(Case("v4_udp", eth(IP(src=A4, dst=B4) / UDP(sport=1, dport=2) / pl(100)),
             {"L4_UDP_SEND_V4": 100, "L3_UDP_SEND_V4": 128}))
    add(Case("v4_icmp", eth(IP(src=A4, dst=B4) / ICMP() / pl(56)), {"L3_RAW_SEND_V4": 84}))
    add(Case("v6_tcp", eth(IPv6(src=A6, dst=B6) / TCP(sport=1, dport=2) / pl(100)),
             {"L4_TCP_SEND_V6": 100, "L3_TCP_SEND_V6": 160}))
    add(Case("v6_udp", eth(IPv6(src=A6, dst=B6) / UDP(sport=1, dport=2) / pl(100)),
             {"L4_UDP_SEND_V6": 100, "L3_UDP_SEND_V6": 148}))
    add(Case("v6_icmp", eth(IPv6(src=A6, dst=B6) / ICMPv6EchoRequest() / pl(56)), {"L3_RAW_SEND_V6": 104}))
    # Ethernet padding is not IP bytes
    add(Case("v4_udp_padded", eth(IP(src=A4, dst=B4) / UDP(sport=1, dport=2) / pl(4)) + b"\0" * 14,
             {"L4_UDP_SEND_V4": 4, "L3_UDP_SEND_V4": 32}))
    # VLANs: one tag, QinQ, and a third tag (beyond SPEC's two: not IP to us)
    add(Case("vlan_v4_udp", eth(IP(src=A4, dst=B4) / UDP(sport=1, dport=2) / pl(100), [(0x8100, 10)]),
             {"L4_UDP_SEND_V4": 100, "L3_UDP_SEND_V4": 128}))
    add(Case("qinq_v6_tcp", eth(IPv6(src=A6, dst=B6) / TCP(sport=1, dport=2) / pl(77),
                                [(0x88A8, 100), (0x8100, 10)]),
             {"L4_TCP_SEND_V6": 77, "L3_TCP_SEND_V6": 137}))
    f = eth(IP(src=A4, dst=B4) / UDP() / pl(10), [(0x88A8, 1), (0x8100, 2), (0x8100, 3)])
    add(Case("vlan_three_tags", f, {"OTHER_SEND": len(f)}))
    # IPv6 extension headers
    add(Case("v6_ext_hbh_dst_rt_udp",
             eth(IPv6(src=A6, dst=B6) / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt()
                 / IPv6ExtHdrRouting(addresses=[B6]) / UDP(sport=1, dport=2) / pl(100)),
             {"L4_UDP_SEND_V6": 100, "L3_UDP_SEND_V6": 40 + 8 + 8 + 24 + 8 + 100}))
    add(Case("v6_ah_raw", eth(IPv6(src=A6, dst=B6) / AH(nh=17, payloadlen=4, icv=b"\0" * 12) / UDP() / pl(20)),
             {"L3_RAW_SEND_V6": 40 + 24 + 8 + 20}))
    add(Case("v6_esp_raw", eth(IPv6(src=A6, dst=B6) / ESP(spi=1, seq=1, data=b"\0" * 40)),
             {"L3_RAW_SEND_V6": 40 + 8 + 40}))
    deep = IPv6(src=A6, dst=B6)
    for _ in range(9):
        deep = deep / IPv6ExtHdrDestOpt()
    add(Case("v6_ext_chain_too_deep", eth(deep / UDP() / pl(10)), {"L3_RAW_SEND_V6": 40 + 72 + 8 + 10}))
    # IPv6 fragments: first and non-first
    add(Case("v6_frag_first", eth(IPv6(src=A6, dst=B6) / IPv6ExtHdrFragment(offset=0, m=1, nh=17)
                                  / UDP(sport=1, dport=2, len=1008) / pl(48)),
             {"L4_UDP_SEND_V6": 48, "L3_UDP_SEND_V6": 40 + 8 + 8 + 48}))
    add(Case("v6_frag_nonfirst", eth(IPv6(src=A6, dst=B6) / IPv6ExtHdrFragment(offset=7, m=0, nh=17) / pl(100)),
             {"L4_UDP_SEND_V6": 100, "L3_UDP_SEND_V6": 148}))
    add(Case("v4_frag_nonfirst_tcp", eth(IP(src=A4, dst=B4, proto=6, frag=10) / pl(100)),
             {"L4_TCP_SEND_V4": 100, "L3_TCP_SEND_V4": 120}))
    # IPv4-mapped IPv6 counts as IPv4
    add(Case("v6_mapped_udp", eth(IPv6(src="::ffff:" + A4, dst="::ffff:" + B4) / UDP(sport=1, dport=2) / pl(100)),
             {"L4_UDP_SEND_V4": 100, "L3_UDP_SEND_V4": 148}))
    # local traffic
    add(Case("v4_loopback", eth(IP(src="127.0.0.1", dst="127.0.0.1") / UDP() / pl(10)), {"LOCAL_SEND": 38}))
    add(Case("v4_loopback_dst", eth(IP(src=A4, dst="127.3.2.1") / TCP() / pl(10)), {"LOCAL_SEND": 50}))
    add(Case("v6_loopback", eth(IPv6(src="::1", dst="::1") / UDP() / pl(10)), {"LOCAL_SEND": 58}))
    add(Case("v6_mapped_loopback", eth(IPv6(src="::ffff:127.0.0.1", dst="::ffff:" + B4) / UDP() / pl(10)),
             {"LOCAL_SEND": 58}))
    add(Case("v4_src_eq_dst", eth(IP(src=A4, dst=A4) / UDP() / pl(10)), {"LOCAL_SEND": 38}))
    add(Case("v6_src_eq_dst", eth(IPv6(src=A6, dst=A6) / UDP() / pl(10)), {"LOCAL_SEND": 58}))
    add(Case("v4_loopback_included", eth(IP(src="127.0.0.1", dst="127.0.0.1") / UDP() / pl(10)),
             {"L4_UDP_SEND_V4": 10, "L3_UDP_SEND_V4": 38}, include_local=True))
    add(Case("v6_loopback_included", eth(IPv6(src="::1", dst="::1") / TCP() / pl(10)),
             {"L4_TCP_SEND_V6": 10, "L3_TCP_SEND_V6": 70}, include_local=True))
    # not IP
    f = bytes(Ether(src=MAC_A, dst=MAC_B) / ARP(psrc=A4, pdst=B4))
    add(Case("arp", f, {"OTHER_SEND": len(f)}))
    # malformed: counted apart, never as classes
    good4 = eth(IP(src=A4, dst=B4) / TCP() / pl(20))
    add(Case("v4_truncated_header", good4[:14 + 12], {"MALFORMED_SEND": 26}))
    f = bytearray(good4)
    f[14] = 0x44  # IHL 4
    add(Case("v4_ihl_below_5", bytes(f), {"MALFORMED_SEND": len(f)}))
    f = bytearray(good4)
    f[16:18] = (len(good4) - 14 + 1).to_bytes(2, "big")  # total length one past the frame
    add(Case("v4_total_length_past_frame", bytes(f), {"MALFORMED_SEND": len(f)}))
    f = bytearray(good4)
    f[16:18] = (30).to_bytes(2, "big")  # shorter than IP + TCP headers
    add(Case("v4_total_length_below_headers", bytes(f), {"MALFORMED_SEND": len(f)}))
    f = bytearray(good4)
    f[14 + 20 + 12] = 0x40  # TCP data offset 4
    add(Case("v4_tcp_doff_below_5", bytes(f), {"MALFORMED_SEND": len(f)}))
    f = bytearray(good4)
    f[14 + 20 + 12] = 0xF0  # data offset 15: 60 bytes, past the IP length
    add(Case("v4_tcp_doff_past_ip", bytes(f), {"MALFORMED_SEND": len(f)}))
    f = eth(IPv6(src=A6, dst=B6, plen=4) / IPv6ExtHdrDestOpt() / UDP())
    add(Case("v6_ext_past_payload", f, {"MALFORMED_SEND": len(f)}))
    # found by the differential fuzz: a non-first fragment header past the
    # payload length once counted -5 bytes (wrapped to 2**64 - 5)
    f = eth(IPv6(src=A6, dst=B6, plen=3) / IPv6ExtHdrFragment(offset=100, nh=17) / pl(30))
    add(Case("v6_frag_header_past_payload", f, {"MALFORMED_SEND": len(f)}))
    f = eth(IPv6(src=A6, dst=B6, plen=0) / IPv6ExtHdrHopByHop() / UDP() / pl(10))
    add(Case("v6_jumbo_no_length", f, {"MALFORMED_SEND": len(f)}))
    f = eth(IPv6(src=A6, dst=B6) / UDP() / pl(10))[:14 + 30]
    add(Case("v6_truncated_header", f, {"MALFORMED_SEND": len(f)}))
    f = bytearray(eth(IP(src=A4, dst=B4) / UDP() / pl(10)))
    f[14] = 0x65  # version 6 behind an IPv4 ethertype
    add(Case("v4_wrong_version", bytes(f), {"MALFORMED_SEND": len(f)}))
    f = eth(IP(src=A4, dst=B4, proto=17, len=20 + 4) / Raw(b"\0" * 4))
    add(Case("v4_udp_header_cut", f, {"MALFORMED_SEND": len(f)}))
    # GSO aggregates (skb metadata: TC only). The IPv4 total length is 0, as
    # GSO may leave it; the skb length is what counts.
    agg = bytearray(eth(IP(src=A4, dst=B4) / TCP(sport=1, dport=2, options=[("NOP", None)] * 12) / pl(3000)))
    agg[16:18] = b"\0\0"
    add(Case("v4_tcp_gso_3", bytes(agg), {"L4_TCP_SEND_V4": 3000, "L3_TCP_SEND_V4": 20 + 32 + 3000 + 2 * 52},
             segs=3, tc_only=True, packets={"L4_TCP_SEND_V4": 3, "L3_TCP_SEND_V4": 3}))
    add(Case("v6_udp_gso_2", eth(IPv6(src=A6, dst=B6) / UDP(sport=1, dport=2) / pl(2000)),
             {"L4_UDP_SEND_V6": 2000, "L3_UDP_SEND_V6": 48 + 2000 + 48}, segs=2, tc_only=True,
             packets={"L4_UDP_SEND_V6": 2, "L3_UDP_SEND_V6": 2}))
    return c


def fragmented_udp(family: str, payload: int, mtu: int = 1500) -> list[bytes]:
    return frames.fragmented_udp(family, payload, mtu)


def mutations(seed: int, count: int) -> list[bytes]:
    """Seeded hostile frames: catalogue frames with bytes flipped, cut or grown."""
    return frames.mutations(seed, count, [case.frame for case in cases()])


def hostile(seed: int, count: int) -> list[bytes]:
    """Seeded hostile frames (traffic_gen.frames.hostile) over the catalogue."""
    return frames.hostile(seed, count, [case.frame for case in cases()])
