// SPDX-License-Identifier: GPL-2.0
/*
 * tcflow datapath: count bytes and packets per attached interface.
 *
 * Three entry points share one parser and one counting function:
 *   tcflow_xdp         XDP, receive direction
 *   tcflow_tc_ingress  clsact ingress, receive direction
 *   tcflow_tc_egress   clsact egress, send direction
 * All of them only observe: XDP_PASS / TC_ACT_UNSPEC, whatever happens.
 *
 * The byte rules are docs/SPEC.md; tests/support/reference.py is the same
 * rules in Python, and the bpf tests compare the two frame by frame.
 *
 * Split in three: abi.h (what user space shares: structs, constants),
 * parse.h (the fast and the slow parser, one result: struct meta) and
 * flows.h (per five-tuple counting, built only with TCFLOW_FLOWS); this
 * file has the maps of every image, the counting and the entry points.
 *
 * Compile-time switches (passed by tcflow/bpf/build.py as cflags):
 *   C_<CLASS>, NUM_CLASSES  each class's counter cell, from tcflow/model/classes.py
 *   TCFLOW_FLOWS            also count per five-tuple (`--flows`): a second
 *                           image, so the default one costs nothing for it
 * Map sizes are set by the loader when it creates the maps; the sizes below
 * only let bcc compile.
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/if_packet.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>
#include <uapi/linux/pkt_cls.h>

#include <uapi/linux/icmp.h>
#include "abi.h"

/*
 * CLASS(stem, v6) picks the IPv4 or IPv6 cell of one class; the compiler
 * folds it to one add.
 */
#define CLASS(stem, v6) (C_##stem##_V4 + (v6) * (C_##stem##_V6 - C_##stem##_V4))

/*
 * counters is per-CPU, so the plain "+=" below needs no atomics: XDP runs in
 * softirq, and the TC hooks run with bottom halves disabled, so two of our
 * programs never interleave on one CPU. User space sums the CPUs.
 */
BPF_HASH(ifaces, struct iface_key, struct iface_val, 1);
BPF_ARRAY(by_ifindex, struct iface_val, 1);
BPF_PERCPU_ARRAY(counters, struct counters, 1);
#include "parse.h"
#include "flows.h"

/* ---- counting ------------------------------------------------------------ */

static __always_inline void add(struct counters *c, u32 idx, u64 bytes, u64 pkts)
{
	if (idx >= NUM_CLASSES)
		return; /* never taken; keeps the verifier's index bounded */
#ifdef TCFLOW_FLOWS
	/* With flows, clang checks a zero-extended copy of idx and indexes
	 * with the original, which the verifier cannot bound: index with a
	 * 64-bit copy that is the one checked. */
	u64 i = idx;
	asm volatile("" : "+r"(i));
	if (i >= NUM_CLASSES)
		return;
	c->c[i].bytes += bytes;
	c->c[i].packets += pkts;
#else
	c->c[idx].bytes += bytes;
	c->c[idx].packets += pkts;
#endif
}

/* Apply SPEC's byte rules to a parsed packet and bump its classes.
 * frame_len: what other/malformed count (wire bytes). */
static __always_inline void account(struct counters *c, u32 slot, u32 flags, int dir,
				    int r, struct meta *m, u64 frame_len, u32 segs)
{
	if (r == R_OTHER) {
		add(c, dir == DIR_SEND ? C_OTHER_SEND : C_OTHER_RECV, frame_len, 1);
		return;
	}
	if (r != R_IP) {
		add(c, dir == DIR_SEND ? C_MALFORMED_SEND : C_MALFORMED_RECV,
		    frame_len, 1);
		return;
	}

	/* A GSO/GRO aggregate stands for n wire packets, each carrying its own
	 * IP and transport headers; the payload is counted once, as it is. */
	u64 n = segs > 1 ? segs : 1;
	u64 hdrs = m->ip_hlen + m->th_len;
	u64 l3 = m->l3_len + (n - 1) * hdrs;
	u64 l4 = m->l3_len - hdrs;

	if (m->local && !(flags & IFACE_F_INCLUDE_LOCAL)) {
		add(c, dir == DIR_SEND ? C_LOCAL_SEND : C_LOCAL_RECV, l3, n);
		return;
	}

	u32 v6 = m->v6;
	if (m->proto == IPPROTO_TCP) {
		if (dir == DIR_SEND) {
			add(c, CLASS(L4_TCP_SEND, v6), l4, n);
			add(c, CLASS(L3_TCP_SEND, v6), l3, n);
		} else {
			add(c, CLASS(L4_TCP_RECV, v6), l4, n);
			add(c, CLASS(L3_TCP_RECV, v6), l3, n);
		}
	} else if (m->proto == IPPROTO_UDP) {
		if (dir == DIR_SEND) {
			add(c, CLASS(L4_UDP_SEND, v6), l4, n);
			add(c, CLASS(L3_UDP_SEND, v6), l3, n);
		} else {
			add(c, CLASS(L4_UDP_RECV, v6), l4, n);
			add(c, CLASS(L3_UDP_RECV, v6), l3, n);
		}
	} else {
		add(c, dir == DIR_SEND ? CLASS(L3_RAW_SEND, v6) :
					 CLASS(L3_RAW_RECV, v6), l3, n);
		l4 = 0; /* payload bytes are TCP's and UDP's only */
	}
	flow_count(slot, dir, m, l3, l4, n);
}

/* After the IP header: the transport header, then the counting. Inlined once
 * per family, so that what is constant there (the header length, the family)
 * folds away in account(). 0 when counted, -1 to ask the slow path. */
static __always_inline int fast_finish(struct hdr_cursor *nh, void *data_end, int proto,
				       struct meta *m, struct counters *c, u32 slot, u32 flags,
				       int dir, u64 frame_len, u32 segs)
{
	if (proto < 0)
		return -1;
	m->proto = proto;
	if (fast_l4(nh, data_end, m) < 0)
		return -1;
	account(c, slot, flags, dir, R_IP, m, frame_len, segs);
	return 0;
}

/* Count the common case straight from the packet: 0 when counted, -1 to
 * ask the slow path. */
static __always_inline int count_fast(struct counters *c, u32 slot, u32 flags, int dir,
				      void *data, void *data_end, u64 frame_len,
				      u32 segs)
{
	struct hdr_cursor nh = { .pos = data };
	int proto = fast_eth(&nh, data_end);
	u64 avail = frame_len - sizeof(struct ethhdr); /* used once 14 bytes are seen */
	struct meta m;

	if (proto == bpf_htons(ETH_P_IP))
		return fast_finish(&nh, data_end, fast_ipv4(&nh, data_end, avail, segs, &m), &m, c,
				   slot, flags, dir, frame_len, segs);
	if (proto == bpf_htons(ETH_P_IPV6))
		return fast_finish(&nh, data_end, fast_ipv6(&nh, data_end, avail, segs, &m), &m, c,
				   slot, flags, dir, frame_len, segs);
	return -1;
}

/* The counters of the interface a program runs on, or NULL if tcflow does
 * not count it (any more). */
static __always_inline struct counters *find_counters(u32 ifindex, u32 *flags, u32 *slot_out)
{
	struct iface_val *v = by_ifindex.lookup(&ifindex);

	if (v) {
		if (!(v->flags & IFACE_F_BOUND))
			return NULL;
	} else {
		/* past the array's end: the shared hash, under the namespace's
		 * cookie, which entry 0 holds */
		u32 zero = 0;
		u64 *cookie = (u64 *)by_ifindex.lookup(&zero);
		if (!cookie)
			return NULL;
		struct iface_key k = {};
		k.netns_cookie = *cookie;
		k.ifindex = ifindex;
		v = ifaces.lookup(&k);
		if (!v)
			return NULL;
	}
	*flags = v->flags;
	u32 slot = v->slot;
	*slot_out = slot;
	return counters.lookup(&slot);
}

int tcflow_xdp(struct xdp_md *ctx)
{
	u32 flags = 0, slot = 0;
	struct counters *c = find_counters(ctx->ingress_ifindex, &flags, &slot);
	if (!c)
		return XDP_PASS;

	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	u64 frame_len = data_end - data;
	/* The slow path has its own meta and its own account(): the fast path
	 * then needs no value of the slow path's at a join (the compiler would
	 * spill them on every exit). */
	if (count_fast(c, slot, flags, DIR_RECV, data, data_end, frame_len, 1) == 0)
		return XDP_PASS;
	struct meta ms = {};
	int r = parse_slow(ctx, 1, frame_len, 1, 0, &ms);

	account(c, slot, flags, DIR_RECV, r, &ms, frame_len, 1);
	return XDP_PASS;
}

static __always_inline int tc_count(struct __sk_buff *skb, int dir)
{
	/* A copy of the host's own multicast/broadcast send, looped back into
	 * its stack through this device: it never was on the wire, and it has
	 * no Ethernet header to parse (SPEC: counts nowhere). XDP never sees
	 * these; clsact ingress does. */
	if (dir == DIR_RECV && skb->pkt_type == PACKET_LOOPBACK)
		return TC_ACT_UNSPEC;

	u32 flags = 0, slot = 0;
	struct counters *c = find_counters(skb->ifindex, &flags, &slot);
	if (!c)
		return TC_ACT_UNSPEC;

	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	u64 frame_len = skb->len;
	u32 segs = skb->gso_segs;

	/* The kernel moves the outer VLAN tag into skb metadata before clsact
	 * ingress (and a VLAN device may do so on send): the slow path counts
	 * it toward SPEC's two tags. */
	if (!skb->vlan_present &&
	    count_fast(c, slot, flags, dir, data, data_end, frame_len, segs) == 0)
		return TC_ACT_UNSPEC;
	int vlan_meta = skb->vlan_present;
	struct meta ms = {};
	int r = parse_slow(skb, 0, frame_len, segs, vlan_meta, &ms);

	/* other/malformed count wire bytes: a tag held in metadata is one */
	account(c, slot, flags, dir, r, &ms, frame_len + (r != R_IP && vlan_meta ? 4 : 0), segs);
	return TC_ACT_UNSPEC;
}

int tcflow_tc_ingress(struct __sk_buff *skb)
{
	return tc_count(skb, DIR_RECV);
}

int tcflow_tc_egress(struct __sk_buff *skb)
{
	return tc_count(skb, DIR_SEND);
}
