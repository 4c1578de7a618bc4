"""Flows (`--flows`, `tcflow top`): each five-tuple's bytes and packets equal
what a pcap of the interface gives for it, exactly; flows + evicted (+
overflow) equal the interface's classes; a table filled past its bound keeps
the totals exact and says so; `tcflow top` in a real terminal (tmux)."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from typing import Any, Optional

import pytest

from tcflow.bpf import abi, libbpf
from tcflow.host.sandbox import VethPair
from tcflow.output import top as topview
from tests.support.cli import REPO, Live, leftovers, one_line_error, run
from tests.support.counting import key
from tests.support.pcap import capture, drain, pcap_frames
from tests.support.reference import classify
from tests.support.tools import require
from tests.traffic_gen.sockets import socket_in, tcp_exchange, udp_exchange

Tuple = tuple[int, frozenset, Optional[int]]  # protocol, both endpoints, ICMP type
MEASURES = ("ip_bytes", "payload_bytes", "packets")

ND_TYPES = {133, 134, 135, 136, 143}  # ICMPv6 router and neighbour discovery, MLDv2 reports


def five_tuples(frames: list[tuple[bytes, int]], direction: str, frag_ports: dict) -> dict[Tuple, Counter]:
    """Per folded five-tuple, what SPEC counts for each captured frame (one
    direction's capture). Non-first fragments take the first one's ports
    (captures are in order: the first fragment comes first); ICMP's keep its type."""
    out: dict[Tuple, Counter] = defaultdict(Counter)
    for frame, orig in frames:
        b, p = classify(frame, direction, frame_len=orig)
        if not any(k.startswith("L3_") for k in b):
            continue  # local, other or malformed: no flow
        ethertype = struct.unpack_from("!H", frame, 12)[0]
        off = 14
        sport = dport = icmp = None
        if ethertype == 0x0800:
            ihl = (frame[off] & 15) * 4
            proto = frame[off + 9]
            src, dst = frame[off + 12:off + 16], frame[off + 16:off + 20]
            ident, frag = struct.unpack_from("!HH", frame, off + 4)
            nonfirst, more = frag & 0x1FFF, frag & 0x2000
            l4 = off + ihl
        else:
            proto = frame[off + 6]
            src, dst = frame[off + 8:off + 24], frame[off + 24:off + 40]
            l4, nonfirst, more, ident = off + 40, 0, 0, 0
            if proto == 44:  # one fragment header (what the kernel makes)
                proto = frame[l4]
                fo, ident = struct.unpack_from("!HI", frame, l4 + 2)
                nonfirst, more = fo & 0xFFF8, fo & 1
                l4 += 8
        fkey = (src, dst, proto, ident)
        if proto in (6, 17):
            if nonfirst:
                sport, dport = frag_ports.get(fkey, (0, 0))
            else:
                sport, dport = struct.unpack_from("!HH", frame, l4)
                if more:
                    frag_ports[fkey] = (sport, dport)
        elif proto in (1, 58):  # ICMP by type: later fragments take the first one's
            if nonfirst:
                icmp = frag_ports.get(fkey, (0, 0))[0]
            else:
                icmp = frame[l4]
                if more:
                    frag_ports[fkey] = (icmp, 0)
        a = (str(ipaddress.ip_address(src)), sport)
        z = (str(ipaddress.ip_address(dst)), dport)
        t = (proto, frozenset((a, z)), icmp)
        d = direction
        out[t][f"ip_bytes_{d}"] += sum(v for k, v in b.items() if k.startswith("L3_"))
        out[t][f"payload_bytes_{d}"] += sum(v for k, v in b.items() if k.startswith("L4_"))
        out[t][f"packets_{d}"] += sum(v for k, v in p.items() if k.startswith("L3_"))
    return out


def flows_of(doc: dict[str, Any]) -> dict[Tuple, Counter]:
    out: dict[Tuple, Counter] = {}
    for f in doc["top"]:
        ends = frozenset(((f["local"]["address"], f["local"]["port"]), (f["remote"]["address"], f["remote"]["port"])))
        t = (f["protocol_number"], ends, f["icmp_type"])
        assert t not in out, t  # one entry per folded five-tuple
        out[t] = Counter({f"{m}_{d}": f[m][d] for m in MEASURES for d in ("recv", "send")})
        out[t] = +out[t]
    return out


def class_totals(interface: dict[str, Any]) -> Counter:
    c: Counter = Counter()
    for name, v in interface["bytes"].items():
        d = "recv" if "_RECV" in name else "send"
        if name.startswith("L3_"):
            c[f"ip_bytes_{d}"] += v
            c[f"packets_{d}"] += interface["packets"][name]
        elif name.startswith("L4_"):
            c[f"payload_bytes_{d}"] += v
    return +c


def parts(doc: dict[str, Any], *names: str) -> Counter:
    c: Counter = Counter()
    for n in names:
        for m in MEASURES:
            for d in ("recv", "send"):
                c[f"{m}_{d}"] += doc[n][m][d]
    return +c


def quiet_wire(p: VethPair) -> None:
    """Every frame a wire packet, so that a pcap sees what the wire carries;
    and no more router solicitations (the kernel's own chatter that would go
    on through the test; the rest is waited out, see wait_quiet)."""
    for ns, dev in ((p.ns_a, p.dev_a), (p.ns_b, p.dev_b)):
        subprocess.run(["ip", "netns", "exec", ns, "ethtool", "-K", dev, "tso", "off", "gso", "off", "gro", "off"],
                       check=True, capture_output=True)
        subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{dev}.router_solicitations=0"],
                       check=True)



def wait_quiet(paths: list[str], quiet_s: float = 2.5, limit_s: float = 20) -> None:
    """Until the captures have seen nothing for ``quiet_s``: the kernel's own
    chatter after link-up (MLD reports, neighbour discovery) is over, and
    what the captures hold so far can be set aside as before tcflow."""
    end, last, since = time.monotonic() + limit_s, None, time.monotonic()
    while time.monotonic() < end:
        sizes = [os.path.getsize(f) if os.path.exists(f) else 0 for f in paths]
        if sizes != last:
            last, since = sizes, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
        time.sleep(0.1)


def test_flows_equal_the_pcap_per_five_tuple_and_sum_to_the_classes(veth_pair: VethPair,
                                                                    pin_env: dict[str, str]) -> None:
    p = veth_pair
    quiet_wire(p)
    tmp = tempfile.mkdtemp(prefix="tcflow-flows-")
    caps = {d: capture(p.ns_a, p.dev_a, os.path.join(tmp, f"{d}.pcap"), direction=q, snaplen=160, bpf_filter="")
            for d, q in (("send", "out"), ("recv", "in"))}
    wait_quiet([os.path.join(tmp, f"{d}.pcap") for d in caps])
    before = {d: len(pcap_frames(os.path.join(tmp, f"{d}.pcap"))) for d in caps}  # the chatter before tcflow
    live = Live("attach", "--flows", "--flow-idle", "3", "--flows-top", "1000", "--json", "--netns", p.ns_a,
                p.dev_a, env=pin_env)
    stop = threading.Event()
    long_lived: list[int] = []

    def steady() -> None:  # one TCP connection that lives through the whole test
        srv = socket_in(p.ns_b, socket.AF_INET, socket.SOCK_STREAM)
        srv.bind((p.ip4_b, 0))
        srv.listen(1)
        cli = socket_in(p.ns_a, socket.AF_INET, socket.SOCK_STREAM)
        cli.connect(srv.getsockname())
        conn, _ = srv.accept()
        with srv, cli, conn:
            while not stop.is_set():
                cli.sendall(b"s" * 3000)
                got = 0
                while got < 3000:
                    got += len(conn.recv(65536))
                long_lived.append(got)
                time.sleep(0.3)

    t = threading.Thread(target=steady)
    try:
        live.next()
        t.start()
        for _ in range(20):  # many short ones, evicted after 3 s idle
            tcp_exchange(p.ns_a, p.ns_b, socket.AF_INET, p.ip4_b, 2, 300, 700)
        time.sleep(5)
        tcp_exchange(p.ns_a, p.ns_b, socket.AF_INET6, p.ip6_b, 5, 1000, 20_000)
        udp_exchange(p.ns_a, p.ns_b, socket.AF_INET, p.ip4_a, p.ip4_b, 10, 500, 7, 900)
        udp_exchange(p.ns_a, p.ns_b, socket.AF_INET6, p.ip6_a, p.ip6_b, 6, 1200, 4, 100)
        udp_exchange(p.ns_a, p.ns_b, socket.AF_INET, p.ip4_a, p.ip4_b, 3, 4000, 2, 3500)  # fragmented both ways
        udp_exchange(p.ns_a, p.ns_b, socket.AF_INET6, p.ip6_a, p.ip6_b, 2, 3000, 0, 0)    # IPv6 fragments
        p.exec_a("ping", "-c", "3", "-i", "0.2", "-s", "2000", p.ip4_b)                    # ICMP, fragmented
        stop.set()
        t.join(10)
        time.sleep(0.5)
        frames = {d: drain(c, os.path.join(tmp, f"{d}.pcap"))[before[d]:] for d, c in caps.items()}
        live.signal()
        last = live.rest()[-1]["interfaces"][key(p)]
    finally:
        stop.set()
        if t.is_alive():
            t.join(10)
        for c in caps.values():
            if c.poll() is None:
                c.kill()
        live.kill()
        shutil.rmtree(tmp, ignore_errors=True)

    doc = last["flows"]
    assert doc["unattributed"] == {k: 0 for k in doc["unattributed"]}
    # flows + evicted + overflow are the classes, exactly
    assert parts(doc, "in_flows", "evicted", "overflow") == class_totals(last)
    assert doc["evictions"] >= 20 and doc["overflow"]["packets"] == {"recv": 0, "send": 0}

    frag_ports: dict = {}
    want: dict[Tuple, Counter] = defaultdict(Counter)
    for d in ("send", "recv"):
        for tup, c in five_tuples(frames[d], d, frag_ports).items():
            want[tup].update(c)
    got = flows_of(doc)
    assert len(got) == doc["active"]
    for tup, c in got.items():
        assert +want[tup] == c, (tup, dict(c), dict(want[tup]))  # each listed flow, exactly as the pcap says
    evicted = Counter()
    for tup, c in want.items():
        if tup not in got:
            evicted.update(c)
    assert +evicted == parts(doc, "evicted")  # and what left the table is every flow not listed
    # the kinds asked for are there: TCP both families, UDP both, fragments reached their UDP flows
    protos = Counter((t[0], ":" in next(iter(t[1]))[0]) for t in got)
    assert protos[(6, False)] >= 1 and protos[(6, True)] >= 1 and protos[(17, False)] >= 1 and protos[(17, True)] >= 1
    big = [c for t, c in got.items() if t[0] == 17 and c["payload_bytes_send"] == 3 * 4000]
    assert len(big) == 1 and big[0]["packets_send"] == 3 * 3  # three datagrams of three fragments each
    assert any(t[0] == 1 and t[2] == 8 for t in got)  # ICMP by type: echo request
    assert sum(long_lived) > 0


def _flood(p: VethPair, payload: bytes) -> range:
    """UDP datagrams from A to B in twice as many flows as the per-CPU flow
    cache has lines (65,536 on 2 CPUs): 8 source ports to each destination
    port of the range returned (below the ephemeral ports). B's ICMP "port
    unreachable" answers make more flows. The cache's sets overflow, so the
    flows reach the table behind it, and beyond."""
    lines = (1 << abi.flow_cache_set_bits(libbpf.num_possible_cpus())) * abi.FLOW_CACHE_WAYS
    ports = range(10_000, 10_000 + lines // 4)
    assert ports.stop <= 32768
    socks = [socket_in(p.ns_a, socket.AF_INET, socket.SOCK_DGRAM) for _ in range(8)]
    try:
        for port in ports:
            for sock in socks:
                sock.sendto(payload, (p.ip4_b, port))
    finally:
        for sock in socks:
            sock.close()
    return ports


def test_a_full_table_keeps_totals_exact_and_says_so(veth_pair: VethPair, pin_env: dict[str, str]) -> None:
    p = veth_pair
    # IPv4 only: the kernel's IPv6 chatter (a router solicitation seconds
    # after link-up) could arrive during the last snapshot's read and move a
    # cache line into the table between the two halves of that read, which
    # SPEC counts as unattributed (traffic between the reads), not at rest
    for ns, dev in ((p.ns_a, p.dev_a), (p.ns_b, p.dev_b)):
        subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1"],
                       check=True)
    live = Live("attach", "--flows", "--flow-entries", "16", "--flows-top", "100", "--json", "--netns", p.ns_a,
                p.dev_a, env=pin_env)
    try:
        live.next()
        _flood(p, b"x" * 50)
        time.sleep(1.5)
        live.signal()
        last = live.rest()[-1]["interfaces"][key(p)]
        err = live.stderr()
    finally:
        live.kill()
    doc = last["flows"]
    # bounded: user space makes room (the stalest go, to 80 %), and between its
    # ticks the flows that found no room were counted in overflow
    assert doc["table"]["capacity"] == 16 and doc["table"]["entries"] <= 16 and doc["evictions"] > 0
    assert doc["overflow"]["packets"]["send"] > 0
    assert parts(doc, "in_flows", "evicted", "overflow") == class_totals(last)
    assert "flow table is full (16 flows)" in err and "--flow-entries" in err


def test_pinned_serve_flows_keeps_every_flow_across_kill_9(veth_pair: VethPair, pin_env: dict[str, str]) -> None:
    """`serve --pin --flows` killed with kill -9 under traffic and started
    again: the flow table, its cache lines, overflow and the evicted totals
    are pinned, so each flow keeps its counts and flows + evicted + overflow
    still equal the classes, exactly."""
    from tests.support.serve import Serve

    p = veth_pair
    for ns, dev in ((p.ns_a, p.dev_a), (p.ns_b, p.dev_b)):  # IPv4 only, as in the full-table test above
        subprocess.run(["ip", "netns", "exec", ns, "sysctl", "-qw", f"net.ipv6.conf.{dev}.disable_ipv6=1"],
                       check=True)
    args = ("--pin", "--flows", "--flow-entries", "16", "--flows-top", "100", f"{p.ns_a}/{p.dev_a}")
    steady: Optional[_Flows] = None
    s = Serve(*args, env=pin_env)
    s2 = None
    try:
        steady = _Flows(p, 5, 300)
        flood = _flood(p, b"y" * 40)  # more flows than the table holds: evictions and overflow before the kill
        end = time.monotonic() + 30
        while time.monotonic() < end:
            doc = s.traffic()["interfaces"][key(p)]["flows"]
            mine = [f for f in doc["top"]
                    if f["protocol"] == "udp" and f["remote"]["port"] not in flood]
            if len(mine) == 5 and doc["evictions"] > 0:
                break
            time.sleep(0.3)
        before = {(f["local"]["port"], f["remote"]["port"]): f["ip_bytes"]["send"] for f in mine}
        evictions = doc["evictions"]
        assert len(before) == 5 and evictions > 0, doc
        s.p.kill()  # kill -9, traffic going on
        s.p.wait()
        s.stop()
        time.sleep(1.0)  # counted by the pinned programs alone meanwhile
        s2 = Serve(*args, env=pin_env)
        time.sleep(1.5)
        steady.close()
        steady = None
        time.sleep(2.0)  # the last datagrams and cache lines settle
        last = s2.traffic()["interfaces"][key(p)]
        doc = last["flows"]
        after = {(f["local"]["port"], f["remote"]["port"]): f["ip_bytes"]["send"] for f in doc["top"]}
        for k, sent in before.items():
            assert after.get(k, 0) > sent, (k, sent, after.get(k))  # the same flow, counted on: no reset
        assert doc["evictions"] >= evictions
        assert parts(doc, "in_flows", "evicted", "overflow") == class_totals(last)
    finally:
        if steady is not None:
            steady.close()
        s.stop()
        if s2 is not None:
            s2.stop()
        run("detach", "--all", env=pin_env)
    assert leftovers(p.ns_a, p.dev_a, pin_env["TCFLOW_PIN_DIR"]) == []


def test_pins_with_and_without_flows_are_not_mixed(silent_pair: VethPair, pin_env: dict[str, str]) -> None:
    """Pinned programs either count flows or do not: adopting them the other
    way is refused, with the fix, and nothing changes."""
    p = silent_pair
    r = run("attach", "--pin", "--netns", p.ns_a, p.dev_a, "--count", "1", "--json", env=pin_env)
    assert r.returncode == 0, r.stderr
    try:
        r = run("attach", "--pin", "--flows", "--netns", p.ns_a, p.dev_a, "--count", "1", env=pin_env)
        one_line_error(r, "made without --flows", "tcflow detach --all")
        assert sorted(os.listdir(pin_env["TCFLOW_PIN_DIR"])) == ["counters", "ifaces", "meta"]
    finally:
        run("detach", "--all", env=pin_env)
    r = run("attach", "--pin", "--flows", "--netns", p.ns_a, p.dev_a, "--count", "1", "--json", env=pin_env)
    assert r.returncode == 0, r.stderr
    try:
        assert "flows" in os.listdir(pin_env["TCFLOW_PIN_DIR"])
        r = run("attach", "--pin", "--netns", p.ns_a, p.dev_a, "--count", "1", env=pin_env)
        one_line_error(r, "made with --flows", "add --flows")
    finally:
        run("detach", "--all", env=pin_env)
    assert leftovers(p.ns_a, p.dev_a, pin_env["TCFLOW_PIN_DIR"]) == []


class _Flows:
    """``n`` UDP five-tuples from ns_a to ns_b, each a datagram every 0.1 s, until stopped."""

    def __init__(self, p: VethPair, n: int, size: int):
        self.stop = threading.Event()
        self.pairs = []
        for _ in range(n):
            a = socket_in(p.ns_a, socket.AF_INET, socket.SOCK_DGRAM)
            b = socket_in(p.ns_b, socket.AF_INET, socket.SOCK_DGRAM)
            a.bind((p.ip4_a, 0))
            b.bind((p.ip4_b, 0))
            self.pairs.append((a, b))
        self.t = threading.Thread(target=self._run, args=(size,))
        self.t.start()

    def _run(self, size: int) -> None:
        while not self.stop.is_set():
            for a, b in self.pairs:
                a.sendto(b"x" * size, b.getsockname())
            self.stop.wait(0.1)

    def close(self) -> None:
        self.stop.set()
        self.t.join(10)
        for a, b in self.pairs:
            a.close()
            b.close()


def test_top_json_head_1_is_a_useful_first_line(veth_pair: VethPair, pin_env: dict[str, str]) -> None:
    """`tcflow top --json | head -1`: one line after one interval, with the
    flows and their averages and the totals; then a quiet exit (the pipe
    closed) that leaves nothing attached."""
    p = veth_pair
    steady = _Flows(p, 3, 500)
    try:
        r = subprocess.run(["bash", "-o", "pipefail", "-c",
                            f"{sys.executable} -m tcflow top --json --interval 1 --netns {p.ns_a} {p.dev_a} | head -1"],
                           capture_output=True, text=True, cwd=REPO, env=pin_env, timeout=120)
    finally:
        steady.close()
    assert r.returncode == 0 and r.stderr == "", (r.returncode, r.stderr)
    doc = json.loads(r.stdout)
    assert set(doc) >= {"time", "interfaces", "totals", "flows"} and doc["interfaces"] == [key(p)]
    assert set(doc["totals"]["avg"]) == {"2s", "10s", "40s"} and doc["totals"]["ip_bytes"]["send"] > 0
    udp = [f for f in doc["flows"] if f["protocol"] == "udp" and f["remote"].startswith(p.ip4_b)]
    assert len(udp) == 3 and all(f["avg"]["2s"]["send"] > 0 and f["ip_bytes"]["send"] > 0 for f in udp), doc
    assert leftovers(p.ns_a, p.dev_a) == []


@pytest.mark.parametrize("width,height", [(80, 24), (60, 20)])
def test_top_in_a_real_terminal(sandbox: Any, pin_env: dict[str, str], width: int, height: int) -> None:
    """Two namespaces, ten flows, in tmux: both namespaces in WHERE, the 10 s
    and 40 s averages and the totals lines on screen, nothing past the
    terminal; `p` pauses, `q` quits and nothing is left attached."""
    tmux = require("tmux")
    one, two = sandbox.pair(), sandbox.pair()
    session = f"tcflowtop{uuid.uuid4().hex[:6]}"
    sock = f"/tmp/{session}.sock"
    cmd = " ".join([sys.executable, "-m", "tcflow", "top", "--units", "bits", f"{one.ns_a}/{one.dev_a}",
                    f"{two.ns_a}/{two.dev_a}"])
    envs = [a for k in ("TCFLOW_PIN_DIR", "PYTHONPATH") if k in pin_env for a in ("-e", f"{k}={pin_env[k]}")]
    subprocess.run([tmux, "-S", sock, "new-session", "-d", "-s", session, "-x", str(width), "-y", str(height), *envs,
                    f"cd {REPO} && {cmd}"], check=True)
    flows: list[_Flows] = []

    def pane() -> str:
        return subprocess.run([tmux, "-S", sock, "capture-pane", "-p", "-t", session], capture_output=True,
                              text=True).stdout

    def keys(*k: str) -> None:
        subprocess.run([tmux, "-S", sock, "send-keys", "-t", session, *k], check=True)

    try:
        end = time.monotonic() + 60
        while "PROTO"[:4] not in pane() and time.monotonic() < end:
            time.sleep(0.3)
        flows = [_Flows(one, 5, 200), _Flows(two, 5, 1000)]
        screen = ""
        names = topview.short_names([key(one), key(two)])

        def cell(p: VethPair, lines: list[str]) -> str:
            """The WHERE text of p's interface, at the width the header gives WHERE."""
            return topview.squeeze_key(names[key(p)], lines[1].find("PROT") - 1) + " "

        while time.monotonic() < end:
            screen = pane()
            lines = screen.split("\n")
            udp = [ln for ln in lines if " udp " in ln]
            if len(lines) > 3 and len(udp) >= 10 \
                    and all(sum(ln.startswith(cell(p, lines)) for ln in udp) == 5 for p in (one, two)):
                break
            time.sleep(0.3)
        lines = screen.rstrip("\n").split("\n")
        assert len(lines) <= height and all(len(ln) <= width for ln in lines), screen
        assert lines[0].startswith("tcflow top · ") and "2 interfaces" in lines[0], screen
        assert lines[1].split()[0] == "WHERE" and lines[1].split()[-3:] == ["10s", "40s", "TOTAL"], screen
        assert lines[2].split() == ["b/s"] * 4 + ["B"], screen
        udp = [ln for ln in lines if " udp " in ln]
        assert len(udp) >= 10, screen
        assert cell(one, lines) != cell(two, lines)
        for p in (one, two):  # both namespaces, five flows each, every number whole
            mine = [ln for ln in udp if ln.startswith(cell(p, lines))]
            assert len(mine) == 5, screen
            assert all(all(w[0].isdigit() for w in ln.split()[-5:]) for ln in mine), screen
        totals = [ln.split()[0] for ln in lines[-6:] if ln.strip()]
        assert {"TX", "RX", "TOTAL"} <= set(totals), screen
        assert lines[-1].startswith("q quit · p pause"), screen
        keys("p")
        end = time.monotonic() + 10
        while "PAUSED" not in pane() and time.monotonic() < end:
            time.sleep(0.2)
        assert "PAUSED" in pane().split("\n")[0]
        keys("p")
        keys("q")
        end = time.monotonic() + 30
        while subprocess.run([tmux, "-S", sock, "has-session", "-t", session], capture_output=True).returncode == 0:
            if time.monotonic() > end:
                raise AssertionError("tcflow top did not quit on q:\n" + pane())
            time.sleep(0.2)
    finally:
        for f in flows:
            f.close()
        subprocess.run([tmux, "-S", sock, "kill-server"], capture_output=True)
        if os.path.exists(sock):
            os.unlink(sock)
    for p in (one, two):
        assert leftovers(p.ns_a, p.dev_a) == []


def test_serve_flows_traffic_and_metrics(veth_pair: VethPair, pin_env: dict[str, str]) -> None:
    """/traffic carries each interface's top flows; /metrics only flow counts
    and evictions, unless --metrics-top-flows asks for a bounded top N; promtool
    accepts both."""
    from tests.support.serve import Serve, parse_metrics

    promtool = require("promtool")

    p = veth_pair
    for top in (0, 2):
        srv = Serve("--flows", "--flows-top", "50", *(["--metrics-top-flows", str(top)] if top else []), "--netns",
                    p.ns_a, p.dev_a, env=pin_env)
        try:
            for _ in range(4):  # four UDP flows, and TCP
                udp_exchange(p.ns_a, p.ns_b, socket.AF_INET, p.ip4_a, p.ip4_b, 3, 100, 3, 100)
            tcp_exchange(p.ns_a, p.ns_b, socket.AF_INET6, p.ip6_b, 3, 100, 100)
            time.sleep(1.5)
            doc = json.loads(srv.get("/traffic")[2])["interfaces"][key(p)]["flows"]
            # four UDP flows and one TCP flow; besides them only IPv6 neighbour
            # discovery (ICMPv6 by type), which the TCP exchange over IPv6 needs
            assert doc["active"] == len(doc["top"])
            kinds = sorted(f["protocol"] for f in doc["top"] if f["protocol"] != "icmpv6")
            assert kinds == ["tcp", "udp", "udp", "udp", "udp"], doc["top"]
            assert {f["icmp_type"] for f in doc["top"] if f["protocol"] == "icmpv6"} <= ND_TYPES, doc["top"]
            assert 0.0 <= doc["read_age_s"] <= 2.0  # the loop's read of the table, at most 2 s old
            text = srv.metrics()
            r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
            assert r.returncode == 0 and r.stdout.strip() == "" and r.stderr.strip() == "", r.stdout + r.stderr
            m = parse_metrics(text)
            flows = {dict(lab)["device"]: v for (name, lab), v in m.items() if name == "tcflow_flows"}
            assert flows == {p.dev_a: doc["active"]}
            assert any(name == "tcflow_flow_evictions_total" for name, _ in m)
            assert 0.0 <= m[("tcflow_flow_table_read_age_seconds", frozenset())] <= 2.0
            per_flow = [lab for name, lab in m if name == "tcflow_flow_ip_bytes_total"]
            assert len(per_flow) == 2 * top  # top N flows, each received and sent
        finally:
            srv.stop()
