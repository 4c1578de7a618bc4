"""10. Flows at thousands of connections: the in-situ cost of `--flows`.

As section 8, the kernel's BPF statistics under real traffic, flows off and
on interleaved round by round, but with N concurrent flows: a sender in the
other namespace sends 64-byte UDP datagrams to one port from N source ports
in turn (round robin: the hardest order for the per-CPU cache in front of
the flow table, every flow as busy as every other). tcflow is on the
sender's veth (clsact egress sees the datagrams, ingress nothing but the odd
neighbour packet). The sender is a raw IPv4 socket that writes each UDP
header itself: one socket for any number of source ports.
Added ns = on - off for each N.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from typing import Any

import tcflow
from bench.insitu import _stats
from tcflow.bpf import libbpf
from tcflow.bpf.abi import FLOW_CACHE_WAYS, FLOW_KEY_SIZE, FLOW_VAL_SIZE, flow_cache_set_bits
from tcflow.bpf.loader import PROG_TC_EGRESS, Datapath, Options
from tcflow.host.sandbox import Sandbox, VethPair
from tcflow.system import netns

FLOWS = (1, 1000, 4000, 16000)
PORT = 9  # discard
TARGETS = {4000: 60.0, 16000: 100.0}  # added ns a packet at most (issue 22)

SENDER = r"""
import socket, struct, sys, time
src, dst, n, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
payload = b"x" * 64
pkts = []
for i in range(n):
    sport = 20000 + i
    udp = struct.pack("!HHHH", sport, %d, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                     socket.inet_aton(src), socket.inet_aton(dst))
    pkts.append(ip + udp)
end = time.monotonic() + seconds
sent = 0
addr = (dst, 0)
send = s.sendto
while True:
    for p in pkts:
        send(p, addr)
    sent += n
    if time.monotonic() >= end:
        break
print(sent)
""" % PORT


def _send(pair: VethPair, flows: int, seconds: float) -> int:
    """Datagrams from ``flows`` source ports in turn, for ``seconds``; how many."""
    r = subprocess.run(["ip", "netns", "exec", pair.ns_a, sys.executable, "-c", SENDER, pair.ip4_a, pair.ip4_b,
                        str(flows), str(seconds)], capture_output=True, text=True, timeout=seconds + 60)
    if r.returncode != 0:
        raise RuntimeError(f"sender failed: {r.stderr.strip()[-500:]}")
    return int(r.stdout.split()[-1])


def _one(pair: VethPair, ns: netns.Netns, dp: Datapath, flows: int, seconds: float) -> tuple[float, int, int]:
    """ns a packet, datagrams sent, and (flows on) the flow table's entries
    after the run: the flows the per-CPU cache ever had to hand over."""
    with tcflow.Monitor([pair.dev_a], netns=pair.ns_a, datapath=dp, ingress="tc") as mon:
        fd = {"tc_egress": dp.prog(PROG_TC_EGRESS, ns.cookie)}
        _send(pair, flows, 0.3)  # warm: the flows exist in the table before the measured run
        if mon.agent.flows is not None:
            mon.agent.flows.tick()
        before = _stats(fd)
        sent = _send(pair, flows, seconds)
        after = _stats(fd)
        entries = 0
        if dp.options.flows:
            entries = libbpf.lookup_batch(dp.map_fd("flows"), FLOW_KEY_SIZE, FLOW_VAL_SIZE * dp.ncpus,
                                          dp.options.flow_entries + 64)[2]
    runs = after["tc_egress"][0] - before["tc_egress"][0]
    return ((after["tc_egress"][1] - before["tc_egress"][1]) / runs if runs else float("nan")), sent, entries


def run(rounds: int = 3, seconds: float = 2.0, flows: tuple[int, ...] = FLOWS) -> dict[str, Any]:
    stats_fd = libbpf.enable_stats()
    samples: dict[tuple[int, str], list[float]] = {}
    sent: dict[int, list[int]] = {}
    in_table: dict[int, list[int]] = {}
    try:
        with Datapath() as off, Datapath(Options(flows=True, flow_entries=max(flows) * 2)) as on, \
                Sandbox("tcfs-") as box:
            pair = box.pair(dev_a="veth-a", dev_b="veth-b")
            ns = netns.resolve(pair.ns_a)
            for r in range(rounds):
                for n in flows:
                    order = (("off", off), ("on", on)) if r % 2 == 0 else (("on", on), ("off", off))
                    for variant, dp in order:
                        ns_per, count, entries = _one(pair, ns, dp, n, seconds)
                        samples.setdefault((n, variant), []).append(ns_per)
                        sent.setdefault(n, []).append(count)
                        if variant == "on":
                            in_table.setdefault(n, []).append(entries)
    finally:
        os.close(stats_fd)
    rows = []
    for n in flows:
        off_ns, on_ns = statistics.median(samples[(n, "off")]), statistics.median(samples[(n, "on")])
        target = TARGETS.get(n)
        rows.append({"flows": n, "off_ns": off_ns, "on_ns": on_ns, "added_ns": on_ns - off_ns,
                     "target_added_ns": target, "met": None if target is None else on_ns - off_ns <= target,
                     "packets_per_run": statistics.median(sent[n]),
                     "in_table": statistics.median(in_table[n]),
                     "samples": {"off": samples[(n, "off")], "on": samples[(n, "on")]}})
    return {"rounds": rounds, "seconds": seconds, "rows": rows,
            "cache_lines": (1 << flow_cache_set_bits(libbpf.num_possible_cpus())) * FLOW_CACHE_WAYS}
