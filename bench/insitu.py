"""1. Per-packet cost in situ: the kernel's own BPF statistics under real traffic.

``BPF_PROG_TEST_RUN`` replays one frame from a warm cache; real traffic does
not. Here each program sits on a veth (veth-b, in its own namespace) while
iperf3 runs in both directions (``--bidir``) through it; the kernel counts
each program's runs and run time (``kernel.bpf_stats_enabled``, held on by a
BPF_ENABLE_STATS fd), and ns/packet is ``run_time_ns / run_cnt``.

Three programs are measured the same way, one at a time, interleaved round
by round:

- ``floor``: an empty program (XDP_PASS / TC_ACT_UNSPEC): the hook's and the
  statistics' own cost;
- ``minimal``: a minimal 14-class counter written for this bench (one per-CPU
  array, Ethernet, IPv4/IPv6, TCP/UDP/other, one IPv6 fragment header, no
  per-interface lookup): what counting costs;
- ``tcflow``: tcflow's programs, attached by tcflow with the interface
  registered, exactly as `tcflow attach` runs them.

UDP carries 64-byte payloads (the most packets a second); TCP is one stream
each way (GSO aggregates: a "packet" is one skb). Added ns = program - floor;
the headline is tcflow's added ns over the minimal counter's.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any, Optional

import tcflow
from tcflow.bpf import kheaders, libbpf
from tcflow.bpf.loader import PROG_TC_EGRESS, PROG_TC_INGRESS, PROG_XDP, Datapath
from tcflow.host import hooks
from tcflow.host.sandbox import Sandbox, VethPair
from tcflow.model import classes
from tcflow.system import netns
from tests.traffic_gen import iperf

HOOKS = ("tc", "xdp_generic", "xdp_native")  # "tc": ingress and egress at once
VARIANTS = ("floor", "minimal", "tcflow")
POINT_PROGRAM = {"xdp": PROG_XDP, "tc_ingress": PROG_TC_INGRESS, "tc_egress": PROG_TC_EGRESS}

EMPTY_C = r"""
#include <uapi/linux/pkt_cls.h>
int empty_xdp(struct xdp_md *ctx) { return XDP_PASS; }
int empty_tc(struct __sk_buff *skb) { return TC_ACT_UNSPEC; }
"""

# The bench's own minimal counter: what counting the 14 classes costs with
# no per-interface lookup and no rare cases. Not exact (no VLAN, no IPv4
# options or IPv6 extension headers but one fragment header, no GSO): a
# yardstick, not a product.
MINIMAL_C = r"""
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>
#include <uapi/linux/tcp.h>
#include <uapi/linux/pkt_cls.h>

struct pair { u64 bytes, packets; };
struct counters { struct pair c[NUM_CLASSES]; };
BPF_PERCPU_ARRAY(mincount, struct counters, 1);

static __always_inline void add(struct counters *c, u32 i, u64 b)
{
	if (i < NUM_CLASSES) { c->c[i].bytes += b; c->c[i].packets++; }
}

static __always_inline void count(void *data, void *data_end, int send)
{
	u32 zero = 0;
	struct counters *c = mincount.lookup(&zero);
	struct ethhdr *eth = data;
	if (!c || (void *)(eth + 1) > data_end)
		return;
	void *l4;
	u32 l3len, hlen, v6;
	u8 proto;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > data_end)
			return;
		hlen = ip->ihl * 4;
		l3len = bpf_ntohs(ip->tot_len);
		proto = ip->protocol;
		v6 = 0;
		l4 = (void *)ip + hlen;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > data_end)
			return;
		hlen = 40;
		l3len = 40 + bpf_ntohs(ip6->payload_len);
		proto = ip6->nexthdr;
		v6 = 1;
		l4 = ip6 + 1;
		if (proto == 44) {
			u8 *f = l4;
			if ((void *)(f + 8) > data_end)
				return;
			proto = f[0];
			hlen += 8;
			l4 = f + 8;
		}
	} else {
		return;
	}
	u32 th = 0;
	if (proto == IPPROTO_TCP) {
		struct tcphdr *t = l4;
		if ((void *)(t + 1) > data_end)
			return;
		th = t->doff * 4;
		add(c, send ? (v6 ? C_L4_TCP_SEND_V6 : C_L4_TCP_SEND_V4) : (v6 ? C_L4_TCP_RECV_V6 : C_L4_TCP_RECV_V4),
			l3len - hlen - th);
		add(c, send ? (v6 ? C_L3_TCP_SEND_V6 : C_L3_TCP_SEND_V4) : (v6 ? C_L3_TCP_RECV_V6 : C_L3_TCP_RECV_V4),
			l3len);
	} else if (proto == IPPROTO_UDP) {
		add(c, send ? (v6 ? C_L4_UDP_SEND_V6 : C_L4_UDP_SEND_V4) : (v6 ? C_L4_UDP_RECV_V6 : C_L4_UDP_RECV_V4),
			l3len - hlen - 8);
		add(c, send ? (v6 ? C_L3_UDP_SEND_V6 : C_L3_UDP_SEND_V4) : (v6 ? C_L3_UDP_RECV_V6 : C_L3_UDP_RECV_V4),
			l3len);
	} else {
		add(c, send ? (v6 ? C_L3_RAW_SEND_V6 : C_L3_RAW_SEND_V4) : (v6 ? C_L3_RAW_RECV_V6 : C_L3_RAW_RECV_V4),
			l3len);
	}
}

int min_xdp(struct xdp_md *ctx)
{
	count((void *)(long)ctx->data, (void *)(long)ctx->data_end, 0);
	return XDP_PASS;
}

int min_tc_ingress(struct __sk_buff *skb)
{
	count((void *)(long)skb->data, (void *)(long)skb->data_end, 0);
	return TC_ACT_UNSPEC;
}

int min_tc_egress(struct __sk_buff *skb)
{
	count((void *)(long)skb->data, (void *)(long)skb->data_end, 1);
	return TC_ACT_UNSPEC;
}
"""


class _Loaded:
    """One bcc module's programs: {hook point: fd}, plus load facts."""

    def __init__(self, text: str, names: dict[str, str]):
        from bcc import BPF

        with kheaders.applied(kheaders.locate()):
            self.bpf = BPF(text=text, cflags=classes.cflags())
        self.fds: dict[str, int] = {}
        self.facts: dict[str, dict[str, Any]] = {}
        for point, name in names.items():
            t0 = time.perf_counter()
            fd = self.bpf.load_func(name.encode(), BPF.XDP if point == "xdp" else BPF.SCHED_CLS).fd
            self.fds[point] = fd
            self.facts[point] = _facts(fd, time.perf_counter() - t0)

    def close(self) -> None:
        self.bpf.cleanup()


def _facts(fd: int, load_s: float) -> dict[str, Any]:
    info = libbpf.prog_info(fd)
    return {"jited_bytes": info.jited_prog_len, "xlated_insns": info.xlated_prog_len // 8,
            "verified_insns": info.verified_insns, "load_ms": load_s * 1000}


def _attach_raw(ipr: Any, ifindex: int, hook: str, fds: dict[str, int]) -> None:
    if hook == "tc":
        ipr.tc("add", "clsact", ifindex)
        for point, parent in (("tc_ingress", hooks.TC_INGRESS), ("tc_egress", hooks.TC_EGRESS)):
            ipr.tc("add-filter", "bpf", ifindex, ":1", fd=fds[point], name=f"bench_{point}", parent=parent,
                   prio=1, direct_action=True)
    else:
        flags = hooks.XDP_MODE_FLAGS["native" if hook == "xdp_native" else "generic"]
        ipr.link("set", index=ifindex, xdp={"attrs": [("IFLA_XDP_FD", fds["xdp"]), ("IFLA_XDP_FLAGS", flags)]})


def _detach_raw(ipr: Any, ifindex: int, hook: str) -> None:
    if hook == "tc":
        ipr.tc("del", "clsact", ifindex)
    else:
        flags = hooks.XDP_MODE_FLAGS["native" if hook == "xdp_native" else "generic"]
        ipr.link("set", index=ifindex, xdp={"attrs": [("IFLA_XDP_FD", -1), ("IFLA_XDP_FLAGS", flags)]})


def _iperf(pair: VethPair, family: str, proto: str, seconds: int) -> None:
    """iperf3 both ways through the veth; raises if it did not run."""
    iperf.client(pair, pair.ip4_b if family == "ipv4" else pair.ip6_b, proto, seconds, "--bidir")


def _stats(fds: dict[str, int]) -> dict[str, tuple[int, int]]:
    out = {}
    for point, fd in fds.items():
        info = libbpf.prog_info(fd)
        out[point] = (info.run_cnt, info.run_time_ns)
    return out


def _one(pair: VethPair, ns: netns.Netns, ifindex: int, hook: str, variant: str, loaded: dict[str, _Loaded],
         dp: Datapath, family: str, proto: str, seconds: int) -> dict[str, float]:
    """One iperf3 run with one variant on one hook: {hook point: ns per run}."""
    points = ("tc_ingress", "tc_egress") if hook == "tc" else ("xdp",)
    if variant == "tcflow":
        mode = {"tc": {"ingress": "tc"}, "xdp_generic": {"ingress": "xdp", "xdp_mode": "generic"},
                "xdp_native": {"ingress": "xdp", "xdp_mode": "native"}}[hook]
        with tcflow.Monitor([pair.dev_b], netns=pair.ns_b, datapath=dp, **mode):  # type: ignore[arg-type]
            fds = {p: dp.prog(POINT_PROGRAM[p], ns.cookie) for p in points}
            before = _stats(fds)
            _iperf(pair, family, proto, seconds)
            after = _stats(fds)
    else:
        fds = {p: loaded[variant].fds[p] for p in points}
        ipr = hooks.ipr_for(ns)
        try:
            _attach_raw(ipr, ifindex, hook, loaded[variant].fds)
            try:
                before = _stats(fds)
                _iperf(pair, family, proto, seconds)
                after = _stats(fds)
            finally:
                _detach_raw(ipr, ifindex, hook)
        finally:
            ipr.close()
    out = {}
    for p in points:
        runs = after[p][0] - before[p][0]
        out[p] = (after[p][1] - before[p][1]) / runs if runs else float("nan")
        out[f"{p}_runs"] = runs
    return out


def run(rounds: int = 3, seconds: int = 2, hooks_: tuple[str, ...] = HOOKS,
        traffic: tuple[tuple[str, str], ...] = (("ipv4", "udp"), ("ipv6", "udp"), ("ipv4", "tcp"),
                                                 ("ipv6", "tcp"))) -> dict[str, Any]:
    loaded: dict[str, _Loaded] = {}
    stats_fd = libbpf.enable_stats()
    samples: dict[tuple[str, str, str, str, str], list[float]] = {}
    native_refused: Optional[str] = None
    try:
        loaded["floor"] = _Loaded(EMPTY_C, {"xdp": "empty_xdp", "tc_ingress": "empty_tc", "tc_egress": "empty_tc"})
        loaded["minimal"] = _Loaded(MINIMAL_C, {"xdp": "min_xdp", "tc_ingress": "min_tc_ingress",
                                                "tc_egress": "min_tc_egress"})
        with Datapath() as dp, Sandbox("tcfb-") as box:
            pair = box.pair(dev_a="veth-a", dev_b="veth-b")
            ns = netns.resolve(pair.ns_b)
            ifindex = int(pair.exec_b("cat", f"/sys/class/net/{pair.dev_b}/ifindex"))
            tc_facts = {}
            for r in range(rounds):
                for family, proto in traffic:
                    for hook in hooks_:
                        if hook == "xdp_native" and native_refused:
                            continue
                        order = VARIANTS if r % 2 == 0 else tuple(reversed(VARIANTS))
                        for variant in order:
                            try:
                                got = _one(pair, ns, ifindex, hook, variant, loaded, dp, family, proto, seconds)
                            except Exception as e:
                                if hook == "xdp_native":
                                    native_refused = str(e)
                                    break
                                raise
                            for point, v in got.items():
                                if not point.endswith("_runs"):
                                    samples.setdefault((family, proto, hook, point, variant), []).append(v)
            for point, name in POINT_PROGRAM.items():
                tc_facts[point] = dp.load_facts(name, ns.cookie)
    finally:
        for lo in loaded.values():
            lo.close()
        os.close(stats_fd)
    rows: list[dict[str, Any]] = []
    for (family, proto, hook, point, variant), vals in samples.items():
        if variant != "tcflow":
            continue
        floor = statistics.median(samples[(family, proto, hook, point, "floor")])
        minimal = statistics.median(samples[(family, proto, hook, point, "minimal")])
        ours = statistics.median(vals)
        rows.append({"family": family, "proto": proto, "hook": hook, "point": point,
                     "floor_ns": floor, "minimal_ns": minimal, "tcflow_ns": ours,
                     "minimal_added_ns": minimal - floor, "tcflow_added_ns": ours - floor,
                     "ratio": (ours - floor) / (minimal - floor) if minimal - floor > 0 else None,
                     "samples": {v: samples[(family, proto, hook, point, v)] for v in VARIANTS}})
    facts = {"floor": loaded["floor"].facts, "minimal": loaded["minimal"].facts, "tcflow": tc_facts}
    tc_ratios: list[float] = [r["ratio"] for r in rows if r["hook"] == "tc" and r["ratio"] is not None]
    ratio = statistics.median(tc_ratios) if tc_ratios else None
    worst = max(tc_ratios, default=None)
    return {"rounds": rounds, "seconds": seconds, "rows": rows, "programs": facts,
            "native_refused": native_refused,
            "target": {"what": "in-situ added ns, tcflow / minimal counter, TC ingress and egress: at most 2.0x",
                       "median_ratio": ratio, "worst_ratio": worst,
                       "met": ratio is not None and ratio <= 2.0}}
