"""A pure-Python reference for SPEC.md's counting rules.

Written from SPEC.md, not from the C: the bpf tests run every frame through
both and require identical per-class bytes and packets. Keep it plain and
slow; clarity is its only job.
"""

from __future__ import annotations

import ipaddress
import struct
from collections import Counter
from typing import Optional

ETH_P_IP, ETH_P_IPV6, ETH_P_8021Q, ETH_P_8021AD = 0x0800, 0x86DD, 0x8100, 0x88A8
TCP, UDP = 6, 17
V6_EXT = {0, 43, 60}  # hop-by-hop, routing, destination options
V6_FRAG = 44
IPV6_EXT_MAX = 8
VLAN_MAX_DEPTH = 2


class Malformed(Exception):
    pass


def _v4_loopback(a: bytes) -> bool:
    return a[0] == 127


def _v6_mapped(a: bytes) -> bool:
    return a[:12] == b"\0" * 10 + b"\xff\xff"


def _need(frame: bytes, end: int) -> None:
    if end > len(frame):
        raise Malformed(f"header runs past the frame ({end} > {len(frame)})")


def parse(frame: bytes, segs: int = 1, frame_len: Optional[int] = None, tags_outside: int = 0) -> Optional[dict]:
    """None for a non-IP frame; raises Malformed; else the packet's facts.

    ``tags_outside``: VLAN tags already in skb metadata; they count toward
    the two tags SPEC parses.
    """
    flen = len(frame) if frame_len is None else frame_len
    _need(frame, 14)
    (proto,) = struct.unpack_from("!H", frame, 12)
    off = 14
    for _ in range(VLAN_MAX_DEPTH - tags_outside):
        if proto not in (ETH_P_8021Q, ETH_P_8021AD):
            break
        _need(frame, off + 4)
        (proto,) = struct.unpack_from("!H", frame, off + 2)
        off += 4
    avail = flen - off
    nonfirst = False
    if proto == ETH_P_IP:
        _need(frame, off + 20)
        ver, ihl = frame[off] >> 4, frame[off] & 0xF
        if ver != 4 or ihl < 5:
            raise Malformed("IPv4 version/IHL")
        hlen = ihl * 4
        (tot,) = struct.unpack_from("!H", frame, off + 2)
        length = avail if segs > 1 else tot
        if length < hlen or length > avail:
            raise Malformed("IPv4 total length")
        (frag,) = struct.unpack_from("!H", frame, off + 6)
        nonfirst = (frag & 0x1FFF) != 0
        l4proto = frame[off + 9]
        src, dst = frame[off + 12: off + 16], frame[off + 16: off + 20]
        local = _v4_loopback(src) or _v4_loopback(dst) or src == dst
        v6 = False
        iphlen = hlen
    elif proto == ETH_P_IPV6:
        _need(frame, off + 40)
        if frame[off] >> 4 != 6:
            raise Malformed("IPv6 version")
        (plen,) = struct.unpack_from("!H", frame, off + 4)
        length = avail if segs > 1 else 40 + plen
        if length > avail:
            raise Malformed("IPv6 payload length")
        src, dst = frame[off + 8: off + 24], frame[off + 24: off + 40]
        smap, dmap = _v6_mapped(src), _v6_mapped(dst)
        v6 = not (smap or dmap)
        loop6 = ipaddress.IPv6Address(1).packed
        local = (src == loop6 or dst == loop6 or (smap and src[12] == 127)
                 or (dmap and dst[12] == 127) or src == dst)
        nh = frame[off + 6]
        hoff = 40
        for _ in range(IPV6_EXT_MAX):
            if nh in V6_EXT:
                _need(frame, off + hoff + 2)
                nh, elen = frame[off + hoff], (frame[off + hoff + 1] + 1) * 8
                hoff += elen
            elif nh == V6_FRAG:
                _need(frame, off + hoff + 8)
                nh = frame[off + hoff]
                (fo,) = struct.unpack_from("!H", frame, off + hoff + 2)
                hoff += 8
                if fo & 0xFFF8:
                    nonfirst = True
                    break
            else:
                break
            if hoff > length:
                raise Malformed("IPv6 extension headers past the payload")
        if hoff > length:
            raise Malformed("IPv6 fragment header past the payload")
        l4proto = nh
        iphlen = hoff
    else:
        return None

    thlen = 0
    if nonfirst:
        thlen = 0
    elif l4proto == TCP:
        if iphlen + 20 > length:
            raise Malformed("TCP header past the IP length")
        _need(frame, off + iphlen + 13)
        doff = frame[off + iphlen + 12] >> 4
        if doff < 5 or iphlen + doff * 4 > length:
            raise Malformed("TCP data offset")
        thlen = doff * 4
    elif l4proto == UDP:
        if iphlen + 8 > length:
            raise Malformed("UDP header past the IP length")
        thlen = 8
    return {"l3_len": length, "iphlen": iphlen, "thlen": thlen, "proto": l4proto,
            "family": "V6" if v6 else "V4", "local": local}


def classify(frame: bytes, direction: str, *, segs: int = 1, frame_len: Optional[int] = None,
             include_local: bool = False) -> tuple[Counter, Counter]:
    """(bytes, packets) per class name that one hook adds for one frame.

    ``direction`` is "send" or "recv"; ``segs`` the skb's gso_segs (TC
    hooks; 1 for XDP); ``frame_len`` the skb length when it differs from the
    bytes given (never in BPF_PROG_TEST_RUN).
    """
    d = direction.upper()
    flen = len(frame) if frame_len is None else frame_len
    b: Counter = Counter()
    p: Counter = Counter()
    try:
        info = parse(frame, segs, frame_len)
    except Malformed:
        b[f"MALFORMED_{d}"] += flen
        p[f"MALFORMED_{d}"] += 1
        return b, p
    if info is None:
        b[f"OTHER_{d}"] += flen
        p[f"OTHER_{d}"] += 1
        return b, p
    n = max(segs, 1)
    hdrs = info["iphlen"] + info["thlen"]
    l3 = info["l3_len"] + (n - 1) * hdrs
    l4 = info["l3_len"] - hdrs
    assert l4 >= 0, "SPEC: never negative bytes; parse() must call this malformed"
    if info["local"] and not include_local:
        b[f"LOCAL_{d}"] += l3
        p[f"LOCAL_{d}"] += n
        return b, p
    fam = info["family"]
    proto = {TCP: "TCP", UDP: "UDP"}.get(info["proto"], "RAW")
    if proto != "RAW":
        b[f"L4_{proto}_{d}_{fam}"] += l4
        p[f"L4_{proto}_{d}_{fam}"] += n
    b[f"L3_{proto}_{d}_{fam}"] += l3
    p[f"L3_{proto}_{d}_{fam}"] += n
    return b, p
