"""12. What attributing a packet to the cgroup of its local socket costs, in
situ (a design probe for issue 25's `--cgroups`, before it is built).

The same harness as section 1 (bench/insitu.py: a veth, iperf3 both ways,
the kernel's BPF statistics): the bench's ``minimal`` 14-class counter, and
``cgroup``, that counter plus the attribution a `--cgroups` datapath would
do, one at a time, interleaved round by round, on clsact ingress and egress:

- egress: ``bpf_skb_cgroup_id`` (the skb carries its socket);
- ingress: no socket yet: the packet's own tuple looked up,
  ``bpf_skc_lookup_tcp`` / ``bpf_sk_lookup_udp`` in the current namespace,
  then ``bpf_sk_release``. Measured here on Linux 6.18: a clsact program
  may not call ``bpf_sk_cgroup_id`` (the verifier refuses the helper for
  its type), so the lookup alone is what clsact can do; the cgroup then has
  to come from elsewhere (socket storage filled by a cgroup hook, or a
  cgroup_skb ingress program, which runs once the socket is known);
- both: bytes and packets added to a per-CPU hash keyed by the cgroup id
  (0: unattributed); ``helper`` does the same lookups but adds into a
  two-entry per-CPU array (found or not), to tell the helpers' cost from
  the hash's.

``storage`` (egress only; ingress stays the minimal counter's): the
socket remembers its cgroup's slot in socket-local storage
(``bpf_sk_storage_get``, which clsact may call on ``bpf_sk_fullsock``),
filled on its first packet from ``bpf_skb_cgroup_id`` and a cgroup -> slot
hash; every later packet is one storage read and one per-CPU array update.

``cache`` (egress only, and on cgroup_skb below): a per-CPU direct-mapped
cache of 256 tagged lines, a cgroup id to a line, in front of the hash, as
the flows cache fronts the flow table: a hit is one array update.

And the other way to know a received packet's socket: a cgroup_skb
ingress program at the root of the cgroup v2 tree (found from
/proc/self/mounts: /sys/fs/cgroup, or /sys/fs/cgroup/unified on a hybrid
host), which the kernel runs once the socket is known; ``cgskb_count``
classifies from the IP header into the cgroup's 14 classes (a per-CPU hash
keyed by ``bpf_skb_cgroup_id``), and ``cgskb_storage`` the socket-local
slot as above, against ``cgskb_empty``. It is measured
alone (nothing on clsact), run for run.

Added ns = cgroup - minimal, same run. The issue's targets: at most +25 ns
a packet on egress, +60 ns on ingress. ``attributed`` is the share of packets
that found a cgroup (egress) or a socket (ingress) (iperf3's sockets are
there: near 1.0, else the probe measured the wrong thing).
"""

from __future__ import annotations

import os
import statistics
from typing import Any

from bench import insitu
from tcflow.bpf import libbpf
from tcflow.host import hooks
from tcflow.host.sandbox import Sandbox
from tcflow.system import netns

VARIANTS = ("minimal", "helper", "cgroup", "storage", "cache")

CGROUP_C = insitu.MINIMAL_C + r"""
#include <uapi/linux/udp.h>

struct cgpair { u64 bytes, packets; };
BPF_PERCPU_HASH(percg, u64, struct cgpair, 4096);
BPF_PERCPU_ARRAY(seen, struct cgpair, 2);

static __always_inline void to_cgroup(u64 cg, u32 len)
{
	struct cgpair zero = {};
	struct cgpair *v = percg.lookup_or_try_init(&cg, &zero);
	if (v) { v->bytes += len; v->packets++; }
}

static __always_inline void to_seen(u64 cg, u32 len)
{
	u32 i = cg ? 1 : 0;
	struct cgpair *v = seen.lookup(&i);
	if (v) { v->bytes += len; v->packets++; }
}

static __always_inline u64 lookup(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data, *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct bpf_sock_tuple t = {};
	struct bpf_sock *sk = 0;
	if ((void *)(eth + 1) > data_end)
		return 0;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) > data_end || ip->ihl != 5)
			return 0;
		struct udphdr *l4 = (void *)(ip + 1);  /* ports first: TCP's and UDP's alike */
		if ((void *)(l4 + 1) > data_end)
			return 0;
		t.ipv4.saddr = ip->saddr; t.ipv4.daddr = ip->daddr;
		t.ipv4.sport = l4->source; t.ipv4.dport = l4->dest;
		if (ip->protocol == IPPROTO_TCP)
			sk = bpf_skc_lookup_tcp(skb, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
		else if (ip->protocol == IPPROTO_UDP)
			sk = bpf_sk_lookup_udp(skb, &t, sizeof(t.ipv4), BPF_F_CURRENT_NETNS, 0);
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);
		if ((void *)(ip6 + 1) > data_end)
			return 0;
		struct udphdr *l4 = (void *)(ip6 + 1);
		if ((void *)(l4 + 1) > data_end)
			return 0;
		__builtin_memcpy(t.ipv6.saddr, &ip6->saddr, 16);
		__builtin_memcpy(t.ipv6.daddr, &ip6->daddr, 16);
		t.ipv6.sport = l4->source; t.ipv6.dport = l4->dest;
		if (ip6->nexthdr == IPPROTO_TCP)
			sk = bpf_skc_lookup_tcp(skb, &t, sizeof(t.ipv6), BPF_F_CURRENT_NETNS, 0);
		else if (ip6->nexthdr == IPPROTO_UDP)
			sk = bpf_sk_lookup_udp(skb, &t, sizeof(t.ipv6), BPF_F_CURRENT_NETNS, 0);
	}
	if (!sk)
		return 0;
	/* tc may not call bpf_sk_cgroup_id ("program of this type cannot use helper") */
	/* finding the socket is all clsact can do */
	bpf_sk_release(sk);
	return 1;
}

/* cgroup_skb ingress, at the root of the cgroup v2 tree: it runs once the
   socket is known (the skb starts at its IP header); the cgroup's 14 classes
   in a per-CPU hash keyed by the cgroup id */
BPF_PERCPU_HASH(cgclasses, u64, struct counters, 4096);

int cgskb_empty(struct __sk_buff *skb) { return 1; }

int cgskb_count(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data, *data_end = (void *)(long)skb->data_end;
	u64 cg = bpf_skb_cgroup_id(skb);
	struct counters zero = {};
	struct counters *c = cgclasses.lookup_or_try_init(&cg, &zero);
	u8 *first = data;
	if (!c || (void *)(first + 1) > data_end)
		return 1;
	void *l4;
	u32 l3len, hlen, v6;
	u8 proto;
	if ((*first >> 4) == 4) {
		struct iphdr *ip = data;
		if ((void *)(ip + 1) > data_end)
			return 1;
		hlen = ip->ihl * 4; l3len = bpf_ntohs(ip->tot_len); proto = ip->protocol; v6 = 0;
		l4 = (void *)ip + hlen;
	} else {
		struct ipv6hdr *ip6 = data;
		if ((void *)(ip6 + 1) > data_end)
			return 1;
		hlen = 40; l3len = 40 + bpf_ntohs(ip6->payload_len); proto = ip6->nexthdr; v6 = 1;
		l4 = ip6 + 1;
	}
	if (proto == IPPROTO_TCP) {
		struct tcphdr *t = l4;
		if ((void *)(t + 1) > data_end)
			return 1;
		add(c, v6 ? C_L4_TCP_RECV_V6 : C_L4_TCP_RECV_V4, l3len - hlen - t->doff * 4);
		add(c, v6 ? C_L3_TCP_RECV_V6 : C_L3_TCP_RECV_V4, l3len);
	} else if (proto == IPPROTO_UDP) {
		add(c, v6 ? C_L4_UDP_RECV_V6 : C_L4_UDP_RECV_V4, l3len - hlen - 8);
		add(c, v6 ? C_L3_UDP_RECV_V6 : C_L3_UDP_RECV_V4, l3len);
	} else {
		add(c, v6 ? C_L3_RAW_RECV_V6 : C_L3_RAW_RECV_V4, l3len);
	}
	return 1;
}

/* "storage": the socket remembers its cgroup's slot (socket-local storage,
   filled on its first packet from bpf_skb_cgroup_id and a cgroup -> slot
   hash); every later packet is one storage read and one array update */
BPF_SK_STORAGE(sk_slot, u32);
BPF_HASH(cg_slot, u64, u32, 1024);
BPF_PERCPU_ARRAY(slot_counters, struct counters, 1024);
BPF_ARRAY(next_slot, u32, 1);

static __always_inline u32 slot_of(u64 cg)
{
	u32 *s = cg_slot.lookup(&cg);
	if (s)
		return *s;
	u32 zero = 0;
	u32 *n = next_slot.lookup(&zero);
	if (!n)
		return 0;
	u32 v = *n;  /* racy across CPUs: a probe, two cgroups may share a slot */
	*n = v + 1;
	v = v % 1023 + 1;
	cg_slot.update(&cg, &v);
	return v;
}

static __always_inline void by_socket(struct __sk_buff *skb, u32 cls)
{
	u32 slot = 0;
	struct bpf_sock *sk = skb->sk;
	if (sk)
		sk = bpf_sk_fullsock(sk);
	if (sk) {
		u32 *p = sk_slot.sk_storage_get(sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (p) {
			if (!*p)
				*p = slot_of(bpf_skb_cgroup_id(skb));
			slot = *p;
		}
	}
	struct counters *c = slot_counters.lookup(&slot);
	if (c)
		add(c, cls, skb->len);
}

int st_tc_egress(struct __sk_buff *skb)
{
	count((void *)(long)skb->data, (void *)(long)skb->data_end, 1);
	by_socket(skb, C_L3_UDP_SEND_V4);
	return TC_ACT_UNSPEC;
}

int cgskb_storage(struct __sk_buff *skb)
{
	by_socket(skb, C_L3_UDP_RECV_V4);
	return 1;
}

/* "cache": a per-CPU direct-mapped cache of cgroup -> counters (a line a
   cgroup id, tagged), in front of the hash: a hit is one array update */
struct cgline { u64 tag; struct cgpair p; };
BPF_PERCPU_ARRAY(cg_cache, struct cgline, 256);

static __always_inline void by_cache(u64 cg, u32 len)
{
	u32 i = (u32)(cg * 0x9E3779B97F4A7C15ULL >> 56);
	struct cgline *l = cg_cache.lookup(&i);
	if (l && l->tag == cg) {
		l->p.bytes += len;
		l->p.packets++;
		return;
	}
	to_cgroup(cg, len);  /* a miss: the hash, and the line taken (a product would hand the old line's counts over) */
	if (l) {
		l->tag = cg;
		l->p.bytes = 0;
		l->p.packets = 0;
	}
}

int ca_tc_egress(struct __sk_buff *skb)
{
	count((void *)(long)skb->data, (void *)(long)skb->data_end, 1);
	by_cache(bpf_skb_cgroup_id(skb), skb->len);
	return TC_ACT_UNSPEC;
}

int cgskb_cache(struct __sk_buff *skb)
{
	by_cache(bpf_skb_cgroup_id(skb), skb->len);
	return 1;
}

/* "cgroup": the helper, then a per-CPU hash keyed by what it found */
int cg_tc_egress(struct __sk_buff *skb)
{
	count((void *)(long)skb->data, (void *)(long)skb->data_end, 1);
	to_cgroup(bpf_skb_cgroup_id(skb), skb->len);
	return TC_ACT_UNSPEC;
}

int cg_tc_ingress(struct __sk_buff *skb)
{
	count((void *)(long)skb->data, (void *)(long)skb->data_end, 0);
	to_cgroup(lookup(skb), skb->len);
	return TC_ACT_UNSPEC;
}

/* "helper": the helper alone, its answer into a two-entry per-CPU array */
int h_tc_egress(struct __sk_buff *skb)
{
	count((void *)(long)skb->data, (void *)(long)skb->data_end, 1);
	to_seen(bpf_skb_cgroup_id(skb), skb->len);
	return TC_ACT_UNSPEC;
}

int h_tc_ingress(struct __sk_buff *skb)
{
	count((void *)(long)skb->data, (void *)(long)skb->data_end, 0);
	to_seen(lookup(skb), skb->len);
	return TC_ACT_UNSPEC;
}
"""


def _attributed(lo: insitu._Loaded) -> dict[str, float]:
    """Share of packets counted under a cgroup (id != 0), all CPUs together."""
    table = lo.bpf["percg"]
    got = {0: 0, 1: 0}
    for k, vals in table.items():
        got[1 if k.value else 0] += sum(v.packets for v in vals)
    total = got[0] + got[1]
    table.clear()
    return {"attributed": got[1] / total if total else 0.0, "packets": total}


BPF_CGROUP_INET_INGRESS, BPF_F_ALLOW_MULTI = 0, 2


def cgroup2_root() -> str:
    """Where the cgroup v2 hierarchy is mounted: /sys/fs/cgroup, or /sys/fs/cgroup/unified on a hybrid host."""
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 2 and fields[2] == "cgroup2":
                return fields[1]
    raise RuntimeError("no cgroup v2 hierarchy is mounted")


def _cgroup_skb(pair: Any, fd: int, family: str, proto: str, seconds: int) -> float:
    """ns a run of ``fd`` attached at the cgroup v2 root for inet ingress, under one iperf3 run."""
    import ctypes

    lb = ctypes.CDLL("libbpf.so.1", use_errno=True)
    root = os.open(cgroup2_root(), os.O_RDONLY | os.O_DIRECTORY)
    try:
        if lb.bpf_prog_attach(fd, root, BPF_CGROUP_INET_INGRESS, BPF_F_ALLOW_MULTI) != 0:
            raise OSError(ctypes.get_errno(), "bpf_prog_attach(cgroup inet ingress)")
        try:
            before = insitu._stats({"p": fd})["p"]
            insitu._iperf(pair, family, proto, seconds)
            after = insitu._stats({"p": fd})["p"]
        finally:
            lb.bpf_prog_detach2(fd, root, BPF_CGROUP_INET_INGRESS)
    finally:
        os.close(root)
    runs = after[0] - before[0]
    return (after[1] - before[1]) / runs if runs else float("nan")


def _slotted(lo: insitu._Loaded) -> float:
    """Share of the packets ``storage`` counted under a cgroup's slot (not slot 0), then cleared."""
    table = lo.bpf["slot_counters"]
    got = [0, 0]
    for k, vals in table.items():
        n = sum(sum(p.packets for p in v.c) for v in vals)
        got[1 if k.value else 0] += n
    table.clear()
    return got[1] / (got[0] + got[1]) if got[0] + got[1] else 0.0


def run(rounds: int = 3, seconds: int = 2,
        traffic: tuple[tuple[str, str], ...] = (("ipv4", "udp"), ("ipv6", "udp"), ("ipv4", "tcp"),
                                                 ("ipv6", "tcp"))) -> dict[str, Any]:
    stats_fd = libbpf.enable_stats()
    loaded: dict[str, insitu._Loaded] = {}
    samples: dict[tuple[str, str, str, str], list[float]] = {}
    shares: dict[tuple[str, ...], list[float]] = {}
    try:
        loaded["minimal"] = insitu._Loaded(insitu.MINIMAL_C, {"tc_ingress": "min_tc_ingress",
                                                              "tc_egress": "min_tc_egress"})
        loaded["cgroup"] = insitu._Loaded(CGROUP_C, {"tc_ingress": "cg_tc_ingress", "tc_egress": "cg_tc_egress"})
        loaded["helper"] = insitu._Loaded(CGROUP_C, {"tc_ingress": "h_tc_ingress", "tc_egress": "h_tc_egress"})
        from bcc import BPF

        cgskb = {name: loaded["cgroup"].bpf.load_func(name.encode(), BPF.CGROUP_SKB).fd
                 for name in ("cgskb_empty", "cgskb_count", "cgskb_storage", "cgskb_cache")}
        st_egress = loaded["cgroup"].bpf.load_func(b"st_tc_egress", BPF.SCHED_CLS).fd
        ca_egress = loaded["cgroup"].bpf.load_func(b"ca_tc_egress", BPF.SCHED_CLS).fd
        with Sandbox("tcfg-") as box:
            pair = box.pair(dev_a="veth-a", dev_b="veth-b")
            ns = netns.resolve(pair.ns_b)
            ifindex = int(pair.exec_b("cat", f"/sys/class/net/{pair.dev_b}/ifindex"))
            for r in range(rounds):
                for family, proto in traffic:
                    for variant in (VARIANTS if r % 2 == 0 else tuple(reversed(VARIANTS))):
                        fds = ({"tc_ingress": loaded["minimal"].fds["tc_ingress"],
                                "tc_egress": st_egress if variant == "storage" else ca_egress}
                               if variant in ("storage", "cache") else loaded[variant].fds)
                        ipr = hooks.ipr_for(ns)
                        try:
                            insitu._attach_raw(ipr, ifindex, "tc", fds)
                            try:
                                before = insitu._stats(fds)
                                insitu._iperf(pair, family, proto, seconds)
                                after = insitu._stats(fds)
                            finally:
                                insitu._detach_raw(ipr, ifindex, "tc")
                        finally:
                            ipr.close()
                        for point in fds:
                            runs = after[point][0] - before[point][0]
                            ns_run = (after[point][1] - before[point][1]) / runs if runs else float("nan")
                            samples.setdefault((family, proto, point, variant), []).append(ns_run)
                        if variant == "cgroup":
                            shares.setdefault((family, proto), []).append(_attributed(loaded["cgroup"])["attributed"])
                        if variant == "storage":
                            shares.setdefault((family, proto, "storage"), []).append(_slotted(loaded["cgroup"]))
                    for name, fd in cgskb.items():
                        samples.setdefault((family, proto, "cgroup_skb_ingress", name), []).append(
                            _cgroup_skb(pair, fd, family, proto, seconds))
                        if name == "cgskb_storage":
                            shares.setdefault((family, proto, "cgskb_storage"), []).append(
                                _slotted(loaded["cgroup"]))
    finally:
        for lo in loaded.values():
            lo.close()
        os.close(stats_fd)
    rows: list[dict[str, Any]] = []
    for (family, proto, point, variant), vals in sorted(samples.items()):
        if variant == "cgskb_count":
            empty = statistics.median(samples[(family, proto, point, "cgskb_empty")])
            stored = statistics.median(samples[(family, proto, point, "cgskb_storage")])
            rows.append({"family": family, "proto": proto, "point": point, "empty_ns": empty,
                         "count_ns": statistics.median(vals), "added_ns": statistics.median(vals) - empty,
                         "storage_ns": stored, "storage_added_ns": stored - empty,
                         "cache_ns": statistics.median(samples[(family, proto, point, "cgskb_cache")]),
                         "cache_added_ns": statistics.median(samples[(family, proto, point, "cgskb_cache")]) - empty,
                         "storage_found": min(shares[(family, proto, "cgskb_storage")]),
                         "samples": {v: samples[(family, proto, point, v)]
                                     for v in ("cgskb_empty", "cgskb_count", "cgskb_storage", "cgskb_cache")}})
            continue
        if variant != "cgroup":
            continue
        base = statistics.median(samples[(family, proto, point, "minimal")])
        ours = statistics.median(vals)
        helper = statistics.median(samples[(family, proto, point, "helper")])
        stored = statistics.median(samples[(family, proto, point, "storage")])
        rows.append({"family": family, "proto": proto, "point": point, "minimal_ns": base, "cgroup_ns": ours,
                     "added_ns": ours - base, "helper_added_ns": helper - base,
                     "storage_added_ns": stored - base if point == "tc_egress" else None,
                     "cache_added_ns": (statistics.median(samples[(family, proto, point, "cache")]) - base
                                        if point == "tc_egress" else None),
                     "storage_found": min(shares[(family, proto, "storage")]) if point == "tc_egress" else None,
                     "attributed": min(shares[(family, proto)]),
                     "samples": {v: samples[(family, proto, point, v)] for v in VARIANTS}})
    worst = {p: max((r["added_ns"] for r in rows if r["point"] == p), default=None)
             for p in ("tc_egress", "tc_ingress", "cgroup_skb_ingress")}
    return {"rounds": rounds, "seconds": seconds, "rows": rows, "worst_added_ns": worst,
            "programs": loaded_facts(loaded) if loaded else {},
            "target": {"what": "cgroup attribution added over the minimal counter, in situ: egress <= +25 ns, "
                               "ingress <= +60 ns a packet",
                       "egress_met": worst["tc_egress"] is not None and worst["tc_egress"] <= 25,
                       "ingress_met": worst["tc_ingress"] is not None and worst["tc_ingress"] <= 60}}


def loaded_facts(loaded: dict[str, insitu._Loaded]) -> dict[str, Any]:
    return {name: lo.facts for name, lo in loaded.items()}


def main() -> None:
    """`python -m bench.cgroupcost [ROUNDS]`: bench/results/cgroupcost.json, with the date and the commit."""
    import json
    import subprocess
    import sys
    import time

    res = run(rounds=int(sys.argv[1]) if len(sys.argv) > 1 else 3)
    rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/results"],
                           capture_output=True, text=True)  # changes to code, not to earlier results
    res["commit"] = (rev.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")) if rev.returncode == 0 else None
    res["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    res["kernel"] = os.uname().release
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "cgroupcost.json")
    with open(path, "w") as f:
        json.dump(res, f, indent=1)
    for r in res["rows"]:
        if r["point"] == "cgroup_skb_ingress":
            print(f"{r['family']} {r['proto']} {r['point']}: empty {r['empty_ns']:.1f} ns, counting "
                  f"{r['count_ns']:.1f} ns ({r['added_ns']:+.1f}), by socket storage {r['storage_ns']:.1f} ns "
                  f"({r['storage_added_ns']:+.1f}), by cache {r['cache_ns']:.1f} ns ({r['cache_added_ns']:+.1f})")
            continue
        print(f"{r['family']} {r['proto']} {r['point']}: minimal {r['minimal_ns']:.1f} ns, helper "
              f"{r['helper_added_ns']:+.1f}, helper and hash {r['added_ns']:+.1f}, found {r['attributed']:.3f}"
              + (f", by socket storage {r['storage_added_ns']:+.1f}, by cache {r['cache_added_ns']:+.1f}"
                 if r["storage_added_ns"] is not None else ""))
    print(f"written {path}")


if __name__ == "__main__":
    main()
