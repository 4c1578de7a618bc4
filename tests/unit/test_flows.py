"""Flow keys as the datapath writes them, decoded; the top view's layout;
what `unattributed` subtracts. No root, no BPF."""

from __future__ import annotations

import ipaddress
import struct
from typing import Any

from tcflow.engine.flows import decode
from tcflow.model.classes import NAMES
from tcflow.model.flows import Counts, SlotFlows, unattributed
from tcflow.model.snapshot import Hooks, make_snapshot
from tcflow.output import top as flowtable


def key(slot: int, proto: int, a: str, b: str, pa: bytes = b"\0\0", pb: bytes = b"\0\0") -> bytes:
    ia, ib = ipaddress.ip_address(a), ipaddress.ip_address(b)
    hdr6 = ia.version == 6
    return struct.pack("<IBBH2s2s16s16s", slot, proto, hdr6, 0, pa, pb, ia.packed.ljust(16, b"\0"),
                       ib.packed.ljust(16, b"\0"))


def test_decode_tcp_udp_icmp_and_mapped() -> None:
    f = decode(key(3, 6, "198.18.0.1", "198.18.0.2", (443).to_bytes(2, "big"), (50000).to_bytes(2, "big")), Counts())
    assert (f.slot, f.proto, f.local, f.remote, f.family, f.icmp_type) == (
        3, 6, ("198.18.0.1", 443), ("198.18.0.2", 50000), "ipv4", None)
    f = decode(key(0, 17, "2001:db8::1", "2001:db8::2", (53).to_bytes(2, "big"), (9).to_bytes(2, "big")), Counts())
    assert (f.local, f.remote, f.family) == (("2001:db8::1", 53), ("2001:db8::2", 9), "ipv6")
    # ICMP: the type in the source's port field (host order), the other 0; either side
    f = decode(key(0, 1, "198.18.0.1", "198.18.0.2", b"", bytes([8, 0])), Counts())
    assert (f.icmp_type, f.local[1], f.remote[1]) == (8, None, None)
    f = decode(key(0, 58, "2001:db8::1", "2001:db8::2", bytes([129, 0]), b""), Counts())
    assert f.icmp_type == 129
    f = decode(key(0, 17, "::ffff:198.18.0.1", "2001:db8::2"), Counts())
    assert f.family == "ipv4" and f.local[0] == "::ffff:c612:1"  # bytes count as IPv4 (SPEC)
    assert decode(key(0, 47, "198.18.0.1", "198.18.0.2"), Counts()).as_dict()["protocol"] == "47"


def test_unattributed_is_classes_minus_flows_evicted_and_overflow() -> None:
    b = [0] * len(NAMES)
    p = [0] * len(NAMES)
    b[NAMES.index("L3_TCP_SEND_V4")] = 1000
    b[NAMES.index("L4_TCP_SEND_V4")] = 900
    p[NAMES.index("L3_TCP_SEND_V4")] = 10
    b[NAMES.index("L3_UDP_RECV_V6")] = 300
    p[NAMES.index("L3_UDP_RECV_V6")] = 3
    b[NAMES.index("LOCAL_SEND")] = 5000  # kept apart: in no flow
    r = SlotFlows(1, [], Counts(ip_send=600, payload_send=540, packets_send=6, ip_recv=300, packets_recv=3),
                  Counts(ip_send=300, payload_send=270, packets_send=3), Counts(ip_send=100, payload_send=90,
                                                                              packets_send=1), 1, 16, 1)
    assert unattributed(b, p, r) == {"ip_recv": 0, "ip_send": 0, "payload_recv": 0, "payload_send": 0,
                                     "packets_recv": 0, "packets_send": 0}
    r.flows.ip_send -= 40
    assert unattributed(b, p, r)["ip_send"] == 40


def flow(i: int) -> dict[str, Any]:
    return {"protocol": "tcp", "protocol_number": 6, "family": "ipv6", "icmp_type": None,
            "local": {"address": f"2001:db8:ffff:ffff:ffff:ffff:ffff:{i:x}", "port": 65535},
            "remote": {"address": "2001:db8::2", "port": 443},
            "ip_bytes": {"recv": 10 ** 12, "send": i}, "payload_bytes": {"recv": 0, "send": 0},
            "packets": {"recv": 1, "send": 1}, "rate": {"recv": 1.25e9 * i, "send": 0.0}}


def test_top_fits_80x24_with_50_interfaces_busiest_first() -> None:
    zeros = [0] * len(NAMES)
    entries = [(f"veth{i}", "", i + 2, Hooks("tc"), zeros, zeros) for i in range(50)]
    snap = make_snapshot(entries)
    docs = {f"veth{i}": {"active": 3, "evictions": 0, "table": {"entries": 150, "capacity": 16384},
                         "overflow": {"packets": {"recv": 0, "send": 0}}, "top": [flow(i * 3 + j) for j in range(3)]}
            for i in range(50)}
    snap = snap.__class__(snap.time, snap.monotonic, snap.interfaces, docs)
    text = flowtable.screen(snap, "bits", 80, 24, ["12:00:00 a notice"])
    lines = text.split("\n")
    assert len(lines) <= 24 and all(len(ln) <= 80 for ln in lines)
    assert lines[0].startswith("tcflow top · 50 interfaces · 150 flows, 0 evicted")
    assert lines[1].split()[:2] == ["WHERE", "PROTO"] and lines[-1] == "12:00:00 a notice"
    assert lines[3].startswith("veth49 ")  # the busiest of all, whichever interface it is on
    assert lines[3].split()[-3:] == ["1.5T", "0", "1.0T"]  # 149 x 1.25 GB/s x 8 bit/s; 1 TB in total


def test_compact_numbers() -> None:
    for n, want in ((0, "0"), (999, "999"), (999.96, "1.0K"), (164_600, "164.6K"), (12e6, "12.0M"), (3e15, "3000.0T")):
        assert flowtable.compact(n) == want


def test_top_names_each_interface_as_traffic_does_namespace_included() -> None:
    """ns1/dup0 and ns2/dup0 are two interfaces: top's WHERE and its JSON say
    which, with the key /traffic uses (NETNS/IFACE, or the container's name)."""
    zeros = [0] * len(NAMES)
    web = {"container": "web", "container_id": "ab" * 32}
    snap = make_snapshot([("dup0", "ns1", 2, Hooks("tc"), zeros, zeros), ("dup0", "ns2", 2, Hooks("tc"), zeros, zeros),
                          ("eth0", "web", 3, Hooks("tc"), zeros, zeros, web)])
    docs = {k: {"active": 1, "evictions": 0, "table": {"entries": 3, "capacity": 16384},
                "overflow": {"packets": {"recv": 0, "send": 0}}, "top": [flow(i)]}
            for i, k in enumerate(snap.interfaces)}
    snap = snap.__class__(snap.time, snap.monotonic, snap.interfaces, docs)
    assert sorted(who for who, _ in flowtable.rows(snap)) == ["ns1/dup0", "ns2/dup0", "web/eth0"]
    lines = flowtable.screen(snap, "bits", 100, 24, []).split("\n")
    assert {ln.split()[0] for ln in lines[3:6]} == {"ns1/dup0", "ns2/dup0", "web/eth0"}
