"""Flow keys as the datapath writes them, decoded; the top view's layout;
what `unattributed` subtracts. No root, no BPF."""

from __future__ import annotations

import ipaddress
import os
import pathlib
import struct
import time
from typing import Any

import pytest

from tcflow.engine.flows import decode
from tcflow.model.classes import NAMES
from tcflow.model.flows import Counts, SlotFlows, unattributed
from tcflow.model.snapshot import Hooks, make_snapshot
from tcflow.output import top as flowtable

GOLDEN = pathlib.Path(__file__).parent / "golden"


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


def flow(i: int, recv: int = 10 ** 12, send: Any = None, proto: str = "tcp", icmp_type: Any = None,
         local: Any = None, remote: str = "2001:db8::2", rport: Any = 443) -> dict[str, Any]:
    return {"protocol": proto, "protocol_number": 6, "family": "ipv6", "icmp_type": icmp_type,
            "local": {"address": local or f"2001:db8:ffff:ffff:ffff:ffff:ffff:{i:x}",
                      "port": None if icmp_type is not None else 65535},
            "remote": {"address": remote, "port": None if icmp_type is not None else rport},
            "ip_bytes": {"recv": recv, "send": i if send is None else send}, "payload_bytes": {"recv": 0, "send": 0},
            "packets": {"recv": 1, "send": 1}, "rate": {"recv": 0.0, "send": 0.0}}


def _snap(flows: dict[str, list[dict[str, Any]]], mono: float, t: float = 1_796_000_000.0) -> Any:
    """A snapshot of these interfaces (key: NETNS/IFACE or IFACE) with these flows."""
    zeros = [0] * len(NAMES)
    entries = []
    for i, k in enumerate(flows):
        ns, _, name = k.rpartition("/")
        b = list(zeros)  # the interface's IP bytes: its flows' (as if every byte were IPv6 TCP)
        b[NAMES.index("L3_TCP_RECV_V6")] = sum(f["ip_bytes"]["recv"] for f in flows[k])
        b[NAMES.index("L3_TCP_SEND_V6")] = sum(f["ip_bytes"]["send"] for f in flows[k])
        entries.append((name, ns, i + 2, Hooks("tc"), b, zeros))
    snap = make_snapshot(entries, now=t + mono, mono=mono)
    docs = {k: {"active": len(v), "evictions": 0, "table": {"entries": len(v), "capacity": 16384},
                "overflow": {"packets": {"recv": 0, "send": 0}}, "top": v} for k, v in flows.items()}
    return snap.__class__(snap.time, snap.monotonic, snap.interfaces, docs)


def _grow(view: flowtable.View, keys: list[str], n: int, per_s: list[int], seconds: int) -> None:
    """Feed ``seconds`` ticks: flow j of each interface grows per_s[j] bytes a second each way."""
    for s in range(0, seconds + 1):  # 0: the start, every flow at 0 (top reads once as it attaches)
        view.update(_snap({k: [flow(j, recv=per_s[j] * s, send=per_s[j] * s, remote=f"2001:db8::{j + 2:x}")
                               for j in range(n)] for k in keys}, mono=100.0 + s))


def test_top_fits_80x24_with_50_interfaces_busiest_first() -> None:
    keys = [f"veth{i}" for i in range(50)]
    view = flowtable.View(units="bits")
    for s in (0, 1, 2):
        view.update(_snap({k: [flow(i * 3 + j, recv=10 ** 9 * (i * 3 + j) * s, send=0) for j in range(3)]
                           for i, k in enumerate(keys)}, mono=100.0 + s))
    lines = view.screen(80, 24, ["12:00:00 a notice"]).split("\n")
    assert len(lines) == 24 and all(len(ln) <= 80 for ln in lines)
    assert lines[0].startswith("tcflow top · ") and "50 interfaces · 150 flows, 0 evicted" in lines[0]
    assert lines[1].split()[:2] == ["WHERE", "PROTO"] and lines[-2] == "12:00:00 a notice"
    assert lines[3].startswith("veth49 ")  # the busiest of all, whichever interface it is on
    assert lines[3].split()[-5:-3] == ["1.2T", "0"]  # 149 GB a second received, in bit/s; none sent
    assert [ln.split()[0] for ln in lines[-5:-2]] == ["TX", "RX", "TOTAL"]


def test_compact_numbers() -> None:
    for n, want in ((0, "0"), (999, "999"), (999.6, "1.0k"), (164_600, "165k"), (12e6, "12.0M"), (3e15, "3000T")):
        assert flowtable.compact(n) == want
        assert len(want) <= 5


def test_top_names_each_interface_as_traffic_does_namespace_included() -> None:
    """ns1/dup0 and ns2/dup0 are two interfaces: top's WHERE and its JSON say
    which, with the key /traffic uses (NETNS/IFACE, or the container's name)."""
    view = flowtable.View()
    view.update(_snap({"ns1/dup0": [], "ns2/dup0": [], "web/eth0": []}, mono=100.0))
    view.update(_snap({"ns1/dup0": [flow(1)], "ns2/dup0": [flow(2)], "web/eth0": [flow(3)]}, mono=101.0))
    assert sorted(r["interface"] for r in view.document(10)["flows"]) == ["ns1/dup0", "ns2/dup0", "web/eth0"]
    for width in (100, 60):
        lines = view.screen(width, 24).split("\n")
        assert {ln.split()[0] for ln in lines[3:6]} == {"ns1/dup0", "ns2/dup0", "web/eth0"}, lines
    assert flowtable.squeeze_key("ns1/veth-with-a-long-name", 8) == "ns1/vet~"
    names = flowtable.short_names(["tcft22d9-093026dc/tcfa", "tcft22d9-232d7f84/tcfa"])
    assert list(names.values()) == ["~093026dc/tcfa", "~232d7f84/tcfa"]
    assert flowtable.squeeze_key("~093026dc/tcfa", 8) == "~093026~"


def test_averages_over_2_10_and_40_seconds_and_totals() -> None:
    """A flow that sends 1000 B/s for 30 s, then 0 for 20 s: its 2 s average
    falls to 0, its 10 s to 0, its 40 s to 500 B/s; cumulative bytes and
    peak stay; totals add the interfaces (iftop's TX/RX/TOTAL lines)."""
    view = flowtable.View()
    for s in range(0, 51):
        sent = 1000 * min(s, 30)
        view.update(_snap({"ns1/a": [flow(1, recv=0, send=sent)], "ns2/a": [flow(1, recv=sent, send=0)]},
                          mono=100.0 + s))
        if s == 30:
            r = view.rows[0]
            assert r.rate("2s") in ((0.0, 1000.0), (1000.0, 0.0)) and sum(r.rate("10s")) == 1000.0
    rows = {r.where: r for r in view.rows}
    assert rows["ns1/a"].rate("2s") == (0.0, 0.0) and rows["ns1/a"].rate("10s") == (0.0, 0.0)
    assert rows["ns1/a"].rate("40s") == (0.0, 500.0)
    assert rows["ns1/a"].send == 30_000
    doc = view.document(10)
    assert doc["totals"]["ip_bytes"] == {"recv": 30_000, "send": 30_000}  # both interfaces' classes
    assert doc["totals"]["avg"]["40s"] == {"recv": 500.0, "send": 500.0}
    assert view.peak == [1000.0, 1000.0, 2000.0]


def test_totals_come_from_the_flows_when_filtered_and_peaks_hold() -> None:
    view = flowtable.View(flowtable.Filters(port=443))
    _grow(view, ["ns1/a"], 2, [500, 100], 4)
    lines = view.totals_lines(80)
    assert [ln.split()[0] for ln in lines] == ["TX", "RX", "TOTAL"]
    assert lines[0].split() == ["TX", "cum", "2.4kB", "peak", "600", "2s", "600", "10s", "600", "40s", "600", "B/s"]
    assert lines[2].split()[:7] == ["TOTAL", "cum", "4.8kB", "peak", "1.2k", "2s", "1.2k"]
    assert view.peak[2] == 1200.0
    narrow = view.totals_lines(58)
    assert all(len(ln) <= 58 for ln in narrow) and "600" in narrow[0] and "B/s" in narrow[0]


def test_filters_port_host_proto_and_where() -> None:
    f = [flow(1, rport=443), flow(2, rport=80, remote="198.18.3.4"), flow(3, proto="udp", rport=53),
         flow(4, proto="icmpv6", icmp_type=1)]
    snap = {"ns1/a": f, "ns2/b": [flow(5, rport=443)]}

    def shown(filters: flowtable.Filters) -> list[tuple[str, str, str]]:
        view = flowtable.View(filters)
        view.update(_snap(snap, mono=101.0))
        return sorted((r.where, r.proto, r.remote) for r in view.rows)

    assert shown(flowtable.Filters(port=443)) == [("ns1/a", "tcp", "[2001:db8::2]:443"),
                                                  ("ns2/b", "tcp", "[2001:db8::2]:443")]
    assert shown(flowtable.Filters(host=ipaddress.ip_network("198.18.0.0/15"))) == [
        ("ns1/a", "tcp", "198.18.3.4:80")]
    assert [p for _, p, _ in shown(flowtable.Filters(proto="udp"))] == ["udp"]
    assert [p for _, p, _ in shown(flowtable.Filters(proto="icmp"))] == ["icmp6/1"]
    assert {w for w, _, _ in shown(flowtable.Filters(where="ns2"))} == {"ns2/b"}
    assert {w for w, _, _ in shown(flowtable.Filters(where="ns1/a"))} == {"ns1/a"}
    view = flowtable.View(flowtable.Filters(port=9))
    view.update(_snap(snap, mono=101.0))
    assert "(no active flows)" in view.screen(80, 24)


def test_one_ping_is_one_row() -> None:
    """Echo request (sent) and reply (received) are two five-tuples and one conversation."""
    pings = [flow(1, recv=0, send=84, proto="icmp", icmp_type=8, local="198.18.0.1", remote="198.18.0.2"),
             flow(1, recv=84, send=0, proto="icmp", icmp_type=0, local="198.18.0.1", remote="198.18.0.2"),
             flow(1, recv=0, send=104, proto="icmpv6", icmp_type=128, local="2001:db8::1", remote="2001:db8::2"),
             flow(1, recv=104, send=0, proto="icmpv6", icmp_type=129, local="2001:db8::1", remote="2001:db8::2"),
             flow(1, recv=70, send=0, proto="icmp", icmp_type=3, local="198.18.0.1", remote="198.18.0.2")]
    view = flowtable.View()
    view.update(_snap({"ns1/a": pings}, mono=101.0))
    rows = {r.proto: (r.recv, r.send) for r in view.rows}
    assert rows == {"ping": (84, 84), "ping6": (104, 104), "icmp/3": (70, 0)}
    assert {d["protocol"] for d in view.document(10)["flows"]} == {"icmp", "icmpv6"}


def test_keys_sort_pause_help_quit() -> None:
    view = flowtable.View()
    view.update(_snap({"a": []}, mono=100.0))
    view.update(_snap({"a": [flow(1, recv=5000, send=10), flow(2, recv=10, send=9000, remote="2001:db8::9")]},
                      mono=101.0))
    assert view.key("s") and view.rows[0].send == 9000 and view.sort == "sent"
    assert view.key("r") and view.rows[0].recv == 5000
    assert view.key("t") and view.sort == "total"
    assert view.key("p") and view.paused
    before = [r.recv for r in view.rows]
    view.update(_snap({"a": [flow(1, recv=99999, send=10)]}, mono=102.0))
    assert [r.recv for r in view.rows] == before and "PAUSED" in view.screen(80, 24)  # the screen holds still
    assert view.key("p") and not view.paused
    assert view.key("h") and "No names are resolved" in view.screen(80, 24)
    assert view.key("x") and not view.help  # any key closes the help
    assert not view.key("q")


@pytest.mark.parametrize("width,height", [(80, 24), (60, 20)])
def test_top_layout_golden(width: int, height: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two namespaces, ten flows, after 12 s: the whole screen, byte for byte."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    view = flowtable.View(units="bits")
    _grow(view, ["ns1/dup0", "ns2/dup0"], 5, [125_000, 50_000, 9_000, 1_000, 10], 12)
    text = view.screen(width, height, ["14:00:00 a notice"])
    lines = text.split("\n")
    assert len(lines) == height and all(len(ln) <= width for ln in lines)
    assert sum(ln.startswith(("ns1/", "ns2/")) for ln in lines) == 10
    for ln in lines[3:13]:
        assert ln.split()[-1][0].isdigit()  # TOTAL never cut
    path = GOLDEN / f"top_{width}x{height}.txt"
    if os.environ.get("TCFLOW_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"differs from {path}; TCFLOW_UPDATE_GOLDEN=1 rewrites it"
