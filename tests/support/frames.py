"""Crafted frames for every parsing and counting case in SPEC.md.

Each Case has the frame bytes and, where a person can work the figure out,
``expect``: the exact bytes per class for the send direction (recv swaps
SEND for RECV). The reference classifier must agree with ``expect``, and the
BPF programs with the reference, so a slip in either shows.
Addresses are SPEC's test ranges only: 198.18.0.0/15 and 2001:db8::/32.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Optional

from scapy.layers.inet import ICMP, IP, TCP, UDP, IPOption_NOP, fragment
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    fragment6,
)
from scapy.layers.ipsec import AH, ESP
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether
from scapy.packet import Raw

A4, B4 = "198.18.0.1", "198.18.0.2"
A6, B6 = "2001:db8::1", "2001:db8::2"
MAC_A, MAC_B = "02:00:00:00:00:01", "02:00:00:00:00:02"


@dataclass
class Case:
    name: str
    frame: bytes
    expect: Optional[dict[str, int]] = None  # send-direction bytes per class
    segs: int = 1            # gso_segs (TC test runs only)
    include_local: bool = False
    tc_only: bool = False    # needs skb metadata XDP cannot carry
    packets: dict[str, int] = field(default_factory=dict)


def eth(payload, vlans=()):  # noqa: ANN001 - scapy packets
    p = Ether(src=MAC_A, dst=MAC_B)
    for tpid, vid in vlans:
        p = p / (Dot1AD(vlan=vid) if tpid == 0x88A8 else Dot1Q(vlan=vid))
    return bytes(p / payload)


def pl(n: int) -> Raw:
    return Raw(bytes((i * 7 + 3) & 0xFF for i in range(n)))


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
    """A UDP datagram of ``payload`` bytes, fragmented: its fragments count ``payload`` exactly."""
    if family == "ipv4":
        pkt = IP(src=A4, dst=B4, id=1234) / UDP(sport=1, dport=2) / pl(payload)
        return [eth(f) for f in fragment(pkt, fragsize=mtu - 20)]
    pkt = IPv6(src=A6, dst=B6) / IPv6ExtHdrFragment(id=99) / UDP(sport=1, dport=2) / pl(payload)
    return [eth(f) for f in fragment6(pkt, mtu)]


def mutations(seed: int, count: int) -> list[bytes]:
    """Seeded hostile frames: catalogue frames with bytes flipped, cut or grown."""
    rng = random.Random(seed)
    base = [case.frame for case in cases()]
    out = []
    for _ in range(count):
        f = bytearray(rng.choice(base))
        for _ in range(rng.randint(1, 4)):
            op = rng.random()
            if op < 0.6:
                i = rng.randrange(len(f))
                f[i] = rng.randrange(256)
            elif op < 0.8 and len(f) > 15:
                del f[rng.randrange(15, len(f)):]
            else:
                f += bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
        out.append(bytes(f))
    return out


# -- structured hostile frames: built from bytes, fast, seeded ----------

MAX_TEST_FRAME = 3520
_ETH = bytes.fromhex("020000000002" "020000000001")
_V4A, _V4B = bytes([198, 18, 0, 1]), bytes([198, 18, 0, 2])
_V6A = bytes.fromhex("20010db8000000000000000000000001")
_V6B = bytes.fromhex("20010db8000000000000000000000002")
_EXT = (0, 43, 60, 44, 51, 135)  # hop-by-hop, routing, dest opts, fragment, AH, mobility


def _l4(rng: random.Random, proto: int, room: int) -> bytes:
    """A TCP/UDP header with hostile fields, then some payload."""
    if proto == 6:
        doff = rng.choice([0, 1, 4, 5, 5, 5, 6, 8, 15])
        hdr = bytearray(20) + bytes(max(0, doff * 4 - 20) if rng.random() < 0.7 else 0)
        hdr[12] = doff << 4
    elif proto == 17:
        hdr = bytearray(8)
        hdr[4:6] = rng.choice([0, 7, 8, 9, 1000, 0xFFFF]).to_bytes(2, "big")
    else:
        hdr = bytearray()
    return bytes(hdr) + bytes(rng.randrange(256) for _ in range(rng.randint(0, min(room, 40))))


def _v4(rng: random.Random) -> bytes:
    proto = rng.choice([6, 17, 1, 6, 17, 47])
    ihl = rng.choice([0, 3, 4, 5, 5, 5, 5, 6, 15])
    opts = bytes(max(0, ihl * 4 - 20)) if rng.random() < 0.8 else b""
    body = _l4(rng, proto, 60)
    true_len = 20 + len(opts) + len(body)
    tot = rng.choice([true_len, true_len, 0, 19, 20, true_len - 1, true_len + 1, 0xFFFF, rng.randrange(65536)])
    frag = rng.choice([0, 0, 0, 0x2000, 0x0001, 0x2005, 0x4000])
    src, dst = (_V4A, _V4B) if rng.random() < 0.9 else (bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1]))
    version = 4 if rng.random() < 0.95 else rng.choice([0, 5, 6, 15])
    hdr = (bytes([version << 4 | ihl, 0]) + (tot & 0xFFFF).to_bytes(2, "big") + b"\0\1"
           + frag.to_bytes(2, "big") + bytes([64, proto]) + b"\0\0" + src + dst)
    return b"\x08\x00" + hdr + opts + body


def _v6(rng: random.Random) -> bytes:
    """IPv6 with a chain of 0..12 extension headers: deep, looping (the same
    type again and again), cut, or with lengths that point past the packet."""
    chain = []
    for _ in range(rng.choice([0, 0, 1, 2, 3, 7, 8, 9, 12])):
        chain.append(rng.choice(_EXT) if rng.random() < 0.5 else (chain[-1] if chain else 0))
    final = rng.choice([6, 17, 58, 59, 6, 17])
    hdrs = b""
    nexts = chain[1:] + [final]
    for typ, nxt in zip(chain, nexts, strict=False):
        if typ == 44:
            off = rng.choice([0, 0, 1, 100])
            hdrs += bytes([nxt, 0]) + ((off << 3) | rng.choice([0, 1])).to_bytes(2, "big") + b"\0\0\0\1"
        elif typ == 51:
            ln = rng.choice([1, 2, 4])
            hdrs += bytes([nxt, ln]) + bytes(ln * 4 + 6)
        else:
            ln = rng.choice([0, 0, 1, 255])
            # 255 claims 2,048 bytes but brings 6: a length past the packet
            body = bytes((ln + 1) * 8 - 2 if ln < 255 else 6)
            if typ == 0 and rng.random() < 0.3:  # a jumbo payload option
                body = b"\xc2\x04" + rng.randrange(1 << 32).to_bytes(4, "big") + body[6:]
            hdrs += bytes([nxt, ln]) + body
    body = _l4(rng, final, 60)
    true_len = len(hdrs) + len(body)
    plen = rng.choice([true_len, true_len, 0, 1, true_len - 1, true_len + 8, 0xFFFF])
    src, dst = (_V6A, _V6B) if rng.random() < 0.9 else (_V6A, _V6A)
    if rng.random() < 0.05:  # IPv4-mapped
        src, dst = bytes(10) + b"\xff\xff" + _V4A, bytes(10) + b"\xff\xff" + _V4B
    hdr = b"\x60\0\0\0" + (plen & 0xFFFF).to_bytes(2, "big") + bytes([chain[0] if chain else final, 64]) + src + dst
    return b"\x86\xdd" + hdr + hdrs + body


def hostile(seed: int, count: int) -> list[bytes]:
    """Seeded hostile frames, three kinds in turn: structured (VLAN stacks of
    0-4 tags, IHL < 5, TCP data offset < 5, bogus and jumbo lengths, deep and
    looping IPv6 extension chains), catalogue mutations, and random bytes.
    Every frame is cut at a random point one time in five."""
    rng = random.Random(seed)
    mutated = iter(mutations(seed + 1, count // 3 + 1))
    out = []
    for i in range(count):
        kind = i % 3
        if kind == 0:
            tags = b"".join(rng.choice([b"\x81\x00", b"\x88\xa8"]) + rng.randrange(4096).to_bytes(2, "big")
                            for _ in range(rng.choice([0, 0, 0, 1, 2, 3, 4])))
            f = _ETH + tags + (_v4(rng) if rng.random() < 0.5 else _v6(rng))
        elif kind == 1:
            f = next(mutated)
        else:
            f = _ETH + rng.choice([b"\x08\x00", b"\x86\xdd", b"\x81\x00", b"\x88\xa8",
                                   rng.randrange(65536).to_bytes(2, "big")]) + \
                bytes(rng.randrange(256) for _ in range(rng.randint(0, 120)))
        if rng.random() < 0.2 and len(f) > 14:
            f = f[:rng.randint(14, len(f))]
        # A program without XDP frags support sees at most one page less
        # head- and tailroom (3,520 bytes); no device hands it more.
        out.append(f[:MAX_TEST_FRAME])
    return out
