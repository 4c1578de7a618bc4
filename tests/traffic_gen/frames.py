"""Crafted frames: Ethernet frames built with scapy, fragmented datagrams,
seeded hostile frames, and a sender that puts them on an interface inside a
namespace (AF_PACKET, so they cross the interface's hooks as they are).

Addresses are docs/SPEC.md's test ranges: 198.18.0.0/15 and 2001:db8::/32.
Needs scapy (tcflow's ``test`` extra).
"""

from __future__ import annotations

import errno
import ipaddress
import random
import socket
from typing import Iterable

from scapy.layers.inet import ICMP, IP, TCP, UDP, fragment
from scapy.layers.inet6 import (
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    fragment6,
)
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether
from scapy.packet import Packet, Raw

from tcflow.system.netns import resolve, run_in

A4, B4 = "198.18.0.1", "198.18.0.2"
A6, B6 = "2001:db8::1", "2001:db8::2"
MAC_A, MAC_B = "02:00:00:00:00:01", "02:00:00:00:00:02"


def eth(payload: Packet, vlans: Iterable[tuple[int, int]] = (), src: str = MAC_A, dst: str = MAC_B) -> bytes:
    """``payload`` in an Ethernet frame, under ``vlans`` ((TPID, VLAN id), outer first)."""
    p = Ether(src=src, dst=dst)
    for tpid, vid in vlans:
        p = p / (Dot1AD(vlan=vid) if tpid == 0x88A8 else Dot1Q(vlan=vid))
    return bytes(p / payload)


def pl(n: int) -> Raw:
    """``n`` bytes of payload (a fixed pattern)."""
    return Raw(bytes((i * 7 + 3) & 0xFF for i in range(n)))


TCP_OPTS = [("MSS", 1460), ("NOP", None), ("WScale", 7), ("SAckOK", b""), ("Timestamp", (1, 0))]


def _ip(src: str, dst: str) -> Packet:
    return IPv6(src=src, dst=dst) if ipaddress.ip_address(src).version == 6 else IP(src=src, dst=dst)


def udp_frame(src: str, dst: str, sport: int, dport: int, size: int) -> bytes:
    """One UDP datagram of ``size`` payload bytes, IPv4 or IPv6 as the addresses are."""
    return eth(_ip(src, dst) / UDP(sport=sport, dport=dport) / pl(size))


def tcp_frame(src: str, dst: str, sport: int, dport: int, size: int, flags: str = "PA") -> bytes:
    """One TCP segment of ``size`` payload bytes (no options: a 20-byte header)."""
    return eth(_ip(src, dst) / TCP(sport=sport, dport=dport, flags=flags) / pl(size))


def icmp_echo(src: str, dst: str, size: int) -> bytes:
    """An ICMP or ICMPv6 echo request with ``size`` bytes of data."""
    if ipaddress.ip_address(src).version == 6:
        return eth(IPv6(src=src, dst=dst) / ICMPv6EchoRequest(data=bytes(pl(size))))
    return eth(IP(src=src, dst=dst) / ICMP() / pl(size))


def fragmented_udp(family: str, payload: int, mtu: int = 1500) -> list[bytes]:
    """A UDP datagram of ``payload`` bytes, fragmented: its fragments count ``payload`` exactly."""
    if family == "ipv4":
        pkt = IP(src=A4, dst=B4, id=1234) / UDP(sport=1, dport=2) / pl(payload)
        return [eth(f) for f in fragment(pkt, fragsize=mtu - 20)]
    pkt6 = IPv6(src=A6, dst=B6) / IPv6ExtHdrFragment(id=99) / UDP(sport=1, dport=2) / pl(payload)
    return [eth(f) for f in fragment6(pkt6, mtu)]


def mutations(seed: int, count: int, base: list[bytes]) -> list[bytes]:
    """Seeded hostile frames: frames of ``base`` with bytes flipped, cut or grown."""
    rng = random.Random(seed)
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
    chain: list[int] = []
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


def hostile(seed: int, count: int, base: list[bytes]) -> list[bytes]:
    """Seeded hostile frames, three kinds in turn: structured (VLAN stacks of
    0-4 tags, IHL < 5, TCP data offset < 5, bogus and jumbo lengths, deep and
    looping IPv6 extension chains), mutations of ``base``, and random bytes.
    Every frame is cut at a random point one time in five."""
    rng = random.Random(seed)
    mutated = iter(mutations(seed + 1, count // 3 + 1, base))
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


def frame_kinds() -> dict[str, bytes]:
    """One frame of each kind the per-packet bench times: common TCP and UDP,
    IPv6 with two extension headers, QinQ, a later fragment, ARP."""

    a4, b4, a6, b6 = A4, B4, A6, B6
    eth = Ether(src=MAC_A, dst=MAC_B)
    body = Raw(bytes(1000))
    frag = fragment(IP(src=a4, dst=b4) / UDP(sport=1, dport=2) / Raw(bytes(3000)), fragsize=1480)[1]
    return {
        "ipv4_tcp": bytes(eth / IP(src=a4, dst=b4) / TCP(sport=1, dport=2) / body),
        "ipv4_udp": bytes(eth / IP(src=a4, dst=b4) / UDP(sport=1, dport=2) / body),
        "ipv6_tcp_2ext": bytes(eth / IPv6(src=a6, dst=b6) / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt()
                               / TCP(sport=1, dport=2) / body),
        "qinq_ipv4_udp": bytes(eth / Dot1AD(vlan=10) / Dot1Q(vlan=20) / IP(src=a4, dst=b4)
                               / UDP(sport=1, dport=2) / body),
        "ipv4_fragment": bytes(eth / frag),
        "non_ip_arp": bytes(eth / ARP(psrc=a4, pdst=b4)),
    }


def send_frames(netns: str, ifname: str, frames: Iterable[bytes], expect_drops: bool = False) -> int:
    """Send raw frames out of ``ifname`` inside namespace ``netns`` (a name
    under /run/netns or a path); how many were sent. ``expect_drops``: the
    egress path drops them on purpose, and send() says so with ENOBUFS after
    the frame went past the hooks."""
    ns = resolve(netns)
    frames = list(frames)

    def send() -> int:
        with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as s:
            s.bind((ifname, 0))
            for f in frames:
                try:
                    s.send(f)
                except OSError as e:
                    if not (expect_drops and e.errno == errno.ENOBUFS):
                        raise
        return len(frames)

    return run_in(ns.path, send)
