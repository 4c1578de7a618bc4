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

Besides, a floor: what touching one 64-byte line a flow costs at all, with
no key, no compare, no table. A program written for this bench (``touch``)
hashes the datagram's ports as flows.h does into an array with as many
64-byte lines for each CPU as the flow cache has lines (each CPU its own
part, as the cache), and adds 1 to the line;
against an empty program, same runs interleaved. If that alone costs more
than a target allows, no design that keeps per-flow state in memory the
packet must reach can meet it on this machine: the cost is the memory, not
the code (flows.h's cache holds every flow up to its size, and *in table*
shows how many ever left it).
"""

from __future__ import annotations

import os
import statistics
import subprocess
from typing import Any

import tcflow
from bench.insitu import _stats
from tcflow.bpf import kheaders, libbpf
from tcflow.bpf.abi import FLOW_CACHE_WAYS, FLOW_KEY_SIZE, FLOW_VAL_SIZE, flow_cache_set_bits
from tcflow.bpf.loader import PROG_TC_EGRESS, Datapath, Options
from tcflow.host import hooks
from tcflow.host.sandbox import Sandbox, VethPair
from tcflow.system import netns
from tests.traffic_gen.sockets import round_robin_udp

FLOWS = (1, 1000, 4000, 16000)
TOUCH_C = r"""
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/udp.h>
struct line { u64 v[8]; };
BPF_ARRAY(lines, struct line, (1 << TOUCH_BITS) * NCPUS);  /* each CPU its own lines, as flows.h's cache */
int touch(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + sizeof(struct ethhdr);
	struct udphdr *udp = (void *)(ip + 1);
	if ((void *)(udp + 1) > end)
		return -1;
	u32 h = ((u32)udp->source << 16 | udp->dest) * 0x9e3779b1;
	u32 idx = bpf_get_smp_processor_id() * (1 << TOUCH_BITS) + (h >> (32 - TOUCH_BITS));
	struct line *l = lines.lookup(&idx);
	if (l)
		l->v[0] += 1;
	return -1;
}
int empty(struct __sk_buff *skb) { return -1; }
"""
PORT = 9  # discard
TARGETS = {4000: 60.0, 16000: 100.0}  # added ns a packet at most (issue 22)



def _send(pair: VethPair, flows: int, seconds: float) -> int:
    """Datagrams from ``flows`` source ports in turn, for ``seconds``; how many."""
    return round_robin_udp(pair.ns_a, pair.ip4_a, pair.ip4_b, flows, seconds, PORT)


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


def _touch(pair: VethPair, ns: netns.Netns, fd: int, flows: int, seconds: float) -> float:
    """ns a packet of one bench program alone on the sender's clsact egress."""
    ifindex = int(subprocess.run(["ip", "netns", "exec", pair.ns_a, "cat", f"/sys/class/net/{pair.dev_a}/ifindex"],
                                 capture_output=True, text=True, check=True).stdout)
    ipr = hooks.ipr_for(ns)
    try:
        ipr.tc("add", "clsact", ifindex)
        try:
            ipr.tc("add-filter", "bpf", ifindex, ":1", fd=fd, name="bench_touch", parent=hooks.TC_EGRESS, prio=1,
                   direct_action=True)
            _send(pair, flows, 0.3)
            before = _stats({"p": fd})["p"]
            _send(pair, flows, seconds)
            after = _stats({"p": fd})["p"]
        finally:
            ipr.tc("del", "clsact", ifindex)
    finally:
        ipr.close()
    runs = after[0] - before[0]
    return (after[1] - before[1]) / runs if runs else float("nan")


def run(rounds: int = 3, seconds: float = 2.0, flows: tuple[int, ...] = FLOWS) -> dict[str, Any]:
    from bcc import BPF

    lines = (1 << flow_cache_set_bits(libbpf.num_possible_cpus())) * FLOW_CACHE_WAYS
    with kheaders.applied(kheaders.locate()):
        probe = BPF(text=TOUCH_C, cflags=[f"-DTOUCH_BITS={lines.bit_length() - 1}",
                                          f"-DNCPUS={libbpf.num_possible_cpus()}"])
    samples: dict[tuple[int, str], list[float]] = {}
    sent: dict[int, list[int]] = {}
    in_table: dict[int, list[int]] = {}
    stats_fd = -1
    try:
        touch_fd = {v: probe.load_func(v.encode(), BPF.SCHED_CLS).fd for v in ("touch", "empty")}
        stats_fd = libbpf.enable_stats()
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
                    for variant in ("touch", "empty") if r % 2 == 0 else ("empty", "touch"):
                        samples.setdefault((n, variant), []).append(_touch(pair, ns, touch_fd[variant], n, seconds))
    finally:
        if stats_fd >= 0:
            os.close(stats_fd)
        probe.cleanup()
    rows = []
    for n in flows:
        off_ns, on_ns = statistics.median(samples[(n, "off")]), statistics.median(samples[(n, "on")])
        target = TARGETS.get(n)
        rows.append({"flows": n, "off_ns": off_ns, "on_ns": on_ns, "added_ns": on_ns - off_ns,
                     "target_added_ns": target, "met": None if target is None else on_ns - off_ns <= target,
                     "packets_per_run": statistics.median(sent[n]),
                     "in_table": statistics.median(in_table[n]),
                     "touch_added_ns": statistics.median(samples[(n, "touch")])
                     - statistics.median(samples[(n, "empty")]),
                     "samples": {v: samples[(n, v)] for v in ("off", "on", "touch", "empty")}})
    return {"rounds": rounds, "seconds": seconds, "rows": rows,
            "cache_lines": (1 << flow_cache_set_bits(libbpf.num_possible_cpus())) * FLOW_CACHE_WAYS}
