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
 * Two parsers, one result. The fast path reads the common case straight
 * from the packet: no VLAN tag, IPv4 without options and not a fragment or
 * IPv6 without extension headers, headers in the linear data. Anything else
 * (or anything it doubts) goes to the slow path, which walks every case
 * SPEC names by copying each header out with bpf_{skb,xdp}_load_bytes: it
 * needs no linear data (no pull), and the verifier walks it once.
 *
 * Compile-time switches (passed by tcflow/build.py as cflags):
 *   C_<CLASS>, NUM_CLASSES  each class's counter cell, from tcflow/classes.py
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

#define VLAN_MAX_DEPTH 2  /* 802.1Q / 802.1ad tags parsed (SPEC) */
#define IPV6_EXT_MAX 8    /* IPv6 extension headers walked (SPEC) */

/*
 * Class cells come from tcflow/classes.py, the only list of the classes, as
 * cflags: -DC_L4_TCP_SEND_V4=0 ... -DNUM_CLASSES=26 (classes.cflags()).
 * CLASS(stem, v6) picks the IPv4 or IPv6 cell of one class; the compiler
 * folds it to one add.
 */
#ifndef NUM_CLASSES
#error "compile with tcflow.classes.cflags(): the class cells come from there"
#endif
#define CLASS(stem, v6) (C_##stem##_V4 + (v6) * (C_##stem##_V6 - C_##stem##_V4))

#define DIR_RECV 0
#define DIR_SEND 1

#define IFACE_F_INCLUDE_LOCAL 1
#define IFACE_F_BOUND 0x80000000 /* in by_ifindex: this entry is in use */

/*
 * Interfaces are known by {netns cookie, ifindex}: ifindexes repeat across
 * namespaces. No helper gives the interface's namespace: XDP may not call
 * bpf_get_netns_cookie(), and for TC it answers the socket's namespace, or
 * init_net's when there is no socket (measured on 6.18 at clsact ingress).
 * So each program is loaded once per namespace it serves, with that
 * namespace's own by_ifindex array (the loader swaps this map for it):
 *  - by_ifindex[ifindex]: the lookup almost every packet takes; the JIT
 *    inlines an array lookup;
 *  - by_ifindex[0] (no interface has ifindex 0) holds the namespace's
 *    cookie, for the shared hash `ifaces`: the fallback for an ifindex past
 *    the array's end. The instructions name no namespace, so the loader can
 *    load a spare set of programs before a namespace (a container) appears.
 */
struct iface_key {
	u64 netns_cookie;
	u32 ifindex;
	u32 pad;
};

struct iface_val {
	u32 slot;  /* index into counters, chosen by user space */
	u32 flags; /* IFACE_F_* */
};

struct cell {
	u64 bytes;
	u64 packets;
};

struct counters {
	struct cell c[NUM_CLASSES];
};

/*
 * counters is per-CPU, so the plain "+=" below needs no atomics: XDP runs in
 * softirq, and the TC hooks run with bottom halves disabled, so two of our
 * programs never interleave on one CPU. User space sums the CPUs.
 */
BPF_HASH(ifaces, struct iface_key, struct iface_val, 1);
BPF_ARRAY(by_ifindex, struct iface_val, 1);
BPF_PERCPU_ARRAY(counters, struct counters, 1);

#ifdef TCFLOW_FLOWS
/*
 * Flows: one entry per {interface slot, protocol, both endpoints}, the two
 * directions of a connection folded into one by putting the lower
 * (address, port) first as endpoint a. For ICMP and ICMPv6 the packet's
 * source endpoint's port field holds the type and the other is 0; other
 * protocols have no ports. Addresses are as in
 * the header (an IPv6 header's IPv4-mapped address stays 16 bytes; its
 * bytes count as IPv4, as everywhere in SPEC).
 *
 * flows is a per-CPU hash (no atomics, as for counters), bounded: when it is
 * full, a new flow's bytes go to flow_overflow[slot] instead, so that the
 * sum over flows, what user space evicted and the overflow is always the
 * interface's classes. Not LRU: the kernel would drop an entry and its
 * bytes without a word. User space evicts idle flows and keeps their totals.
 * A per-CPU cache sits in front of it (flow_cache, below).
 */
struct flow_key {
	u32 slot;
	u8 proto;
	u8 hdr6;      /* the addresses are an IPv6 header's (16 bytes) */
	u16 pad;
	__be16 port_a;
	__be16 port_b;
	__be32 addr_a[4];
	__be32 addr_b[4];
};

struct flow_val {
	u64 ip_bytes[2]; /* [DIR_RECV], [DIR_SEND], as the classes count them */
	u64 payload[2];
	u64 packets[2];
	u32 local;       /* bit 0: endpoint a is this interface's side, bit 1: b */
	u32 pad;
};

/* A fragment after the first has no ports: the first one leaves them here,
 * under its addresses, protocol and IP id. LRU: a lost entry costs only the
 * ports of the fragments after it (they go to the flow with ports 0). */
struct frag_key {
	__be32 id;
	u8 proto;
	u8 hdr6;
	u16 pad;
	__be32 src[4];
	__be32 dst[4];
};

struct frag_val {
	__be16 sport;
	__be16 dport;
};

/*
 * In front of the table, a small per-CPU cache: FLOW_CACHE_LINES lines, each
 * one flow's counts since it took the line. A packet of the flow a line
 * holds adds there (an array lookup the JIT inlines, a key compare): no hash
 * lookup for the packets of a busy flow. A packet of another flow mapping to
 * that line first moves the line's counts into the table (flow_flush()).
 * User space reads the table and the lines together; a flow's counts are the
 * sum of its entry and its lines.
 */
#define FLOW_CACHE_BITS 9
#define FLOW_CACHE_LINES (1 << FLOW_CACHE_BITS)

struct flow_line {
	struct flow_key key;
	u32 used;
	struct flow_val val;
};

BPF_TABLE("percpu_hash", struct flow_key, struct flow_val, flows, 1);
BPF_TABLE("lru_hash", struct frag_key, struct frag_val, flow_frags, 1);
BPF_PERCPU_ARRAY(flow_overflow, struct flow_val, 1);
BPF_PERCPU_ARRAY(flow_cache, struct flow_line, FLOW_CACHE_LINES);

#define FRAG_NONE 0
#define FRAG_FIRST 1 /* offset 0, more fragments: its ports are stored */
#define FRAG_LATER 2 /* offset > 0: ports looked up */
#endif

struct vlan_hdr {
	__be16 tci;
	__be16 encap_proto;
};

struct frag6_hdr {
	u8 nexthdr;
	u8 reserved;
	__be16 frag_off;
	__be32 id;
};

enum parse_result {
	R_IP = 0,     /* meta filled in */
	R_OTHER,      /* not IPv4/IPv6 */
	R_MALFORMED,  /* a header runs past the packet or contradicts it */
};

struct meta {
	u64 l3_len;  /* IP bytes of this skb (the whole aggregate for GSO) */
	u64 ip_hlen; /* IP header, IPv4 options or IPv6 extension headers included */
	u64 th_len;  /* transport header; 0 for raw and non-first fragments */
	u32 proto;   /* upper-layer protocol; only 6 and 17 are not raw */
	u32 v6;      /* family after IPv4-mapped addresses count as IPv4 */
	u32 local;
#ifdef TCFLOW_FLOWS
	__be32 saddr[4] __attribute__((aligned(8))); /* IPv4: [0] only; compared as u64s */
	__be32 daddr[4];
	__be16 sport;    /* ICMP: the type */
	__be16 dport;
	__be32 frag_id;
	u8 frag;         /* FRAG_* */
	u8 hdr6;
#endif
};

static __always_inline int is_vlan(__be16 proto)
{
	return proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD);
}

static __always_inline int is_v4_loopback(__be32 a)
{
	return (bpf_ntohl(a) >> 24) == 127;
}

/* Either address in 127/8, or both the same (SPEC: local). Without a
 * branch: each factor is 0 exactly when its condition holds, and the product
 * (below 2^48) is 0 exactly when one does. BPF has no set-on-condition, so
 * "||" would cost a branch per test on every packet. */
static __always_inline int v4_local(__be32 s, __be32 d)
{
	u64 first_s = bpf_ntohl(s) >> 24, first_d = bpf_ntohl(d) >> 24;

	return (first_s ^ 127) * (first_d ^ 127) * (u64)(s ^ d) == 0;
}

static __always_inline int v6_is_mapped(const __be32 *a)
{
	return a[0] == 0 && a[1] == 0 && a[2] == bpf_htonl(0x0000ffff);
}

static __always_inline int v6_is_loopback(const __be32 *a)
{
	return a[0] == 0 && a[1] == 0 && a[2] == 0 && a[3] == bpf_htonl(1);
}

/* The rare addresses: only an address whose first 64 bits are zero can be
 * IPv4-mapped (::ffff:a.b.c.d, counted as IPv4 by SPEC, its 127/8 as
 * loopback) or the loopback ::1. */
static __always_inline void v6_rare(const __be32 *s, const __be32 *d, struct meta *m)
{
	int smap = v6_is_mapped(s), dmap = v6_is_mapped(d);

	m->v6 = !(smap || dmap);
	m->local = m->local || v6_is_loopback(s) || v6_is_loopback(d) ||
		   (smap && is_v4_loopback(s[3])) || (dmap && is_v4_loopback(d[3]));
}

/* Family and locality of an IPv6 header's addresses: local is either
 * address loopback, or both the same (SPEC). The common case, two global
 * addresses, costs two 64-bit compares. */
static __always_inline void v6_addrs(const struct ipv6hdr *ip6, struct meta *m)
{
	const u64 *s = (const u64 *)&ip6->saddr, *d = (const u64 *)&ip6->daddr;

	m->v6 = 1;
	m->local = ((s[0] ^ d[0]) | (s[1] ^ d[1])) == 0;
	if (!s[0] || !d[0])
		v6_rare(ip6->saddr.in6_u.u6_addr32, ip6->daddr.in6_u.u6_addr32, m);
}

static __always_inline int is_v6_ext(u8 nh)
{
	return nh == IPPROTO_HOPOPTS || nh == IPPROTO_ROUTING ||
	       nh == IPPROTO_DSTOPTS || nh == IPPROTO_FRAGMENT;
}

#ifdef TCFLOW_FLOWS
static __always_inline void flow_addrs4(struct meta *m, __be32 s, __be32 d)
{
	m->saddr[0] = s;
	m->saddr[1] = m->saddr[2] = m->saddr[3] = 0;
	m->daddr[0] = d;
	m->daddr[1] = m->daddr[2] = m->daddr[3] = 0;
	m->hdr6 = 0;
}

static __always_inline void flow_addrs6(struct meta *m, const struct ipv6hdr *ip6)
{
	__builtin_memcpy(m->saddr, &ip6->saddr, 16);
	__builtin_memcpy(m->daddr, &ip6->daddr, 16);
	m->hdr6 = 1;
}

static __always_inline int is_icmp(struct meta *m)
{
	return m->proto == (m->hdr6 ? IPPROTO_ICMPV6 : IPPROTO_ICMP);
}
#endif

/* ---- fast path: direct packet access, common case only ------------------
 * Each helper moves the cursor past its header and returns the next
 * protocol, or -1: "not for the fast path" (the slow path decides what it
 * is, malformed included). */

struct hdr_cursor {
	void *pos;
};

static __always_inline int fast_eth(struct hdr_cursor *nh, void *data_end)
{
	struct ethhdr *eth = nh->pos;

	if ((void *)(eth + 1) > data_end)
		return -1;
	nh->pos = eth + 1;
	return eth->h_proto; /* network order; a VLAN tag is not the fast path */
}

static __always_inline int fast_ipv4(struct hdr_cursor *nh, void *data_end,
				     u64 avail, u32 segs, struct meta *m)
{
	struct iphdr *iph = nh->pos;

	if ((void *)(iph + 1) > data_end)
		return -1;
	/* version 4 without options, and not a non-first fragment (with
	 * flows: no fragment at all, the slow path keeps their ports) */
#ifdef TCFLOW_FLOWS
	if (*(u8 *)iph != 0x45 || (iph->frag_off & bpf_htons(0x3fff)))
		return -1;
#else
	if (*(u8 *)iph != 0x45 || (iph->frag_off & bpf_htons(0x1fff)))
		return -1;
#endif
	/* GSO may leave tot_len 0 (or stale): the aggregate's length is the
	 * skb's. A plain packet is what its header says, padding excluded. */
	u64 len = segs > 1 ? avail : bpf_ntohs(iph->tot_len);
	if (len < sizeof(*iph) || len > avail)
		return -1;
	m->l3_len = len;
	m->ip_hlen = sizeof(*iph);
	m->v6 = 0;
	m->local = v4_local(iph->saddr, iph->daddr);
#ifdef TCFLOW_FLOWS
	flow_addrs4(m, iph->saddr, iph->daddr);
	m->frag = FRAG_NONE;
#endif
	nh->pos = iph + 1;
	return iph->protocol;
}

static __always_inline int fast_ipv6(struct hdr_cursor *nh, void *data_end,
				     u64 avail, u32 segs, struct meta *m)
{
	struct ipv6hdr *ip6 = nh->pos;

	if ((void *)(ip6 + 1) > data_end)
		return -1;
	if (ip6->version != 6 || is_v6_ext(ip6->nexthdr))
		return -1;
	u64 len = segs > 1 ? avail : sizeof(*ip6) + (u64)bpf_ntohs(ip6->payload_len);
	if (len > avail)
		return -1;
	m->l3_len = len;
	m->ip_hlen = sizeof(*ip6);
	v6_addrs(ip6, m);
#ifdef TCFLOW_FLOWS
	flow_addrs6(m, ip6);
	m->frag = FRAG_NONE;
#endif
	nh->pos = ip6 + 1;
	return ip6->nexthdr;
}

/* The transport header's length into m->th_len; 0, or -1 for the slow path. */
static __always_inline int fast_l4(struct hdr_cursor *nh, void *data_end, struct meta *m)
{
	if (m->proto == IPPROTO_TCP) {
		u8 *t = nh->pos;
		if ((void *)(t + 13) > data_end || m->ip_hlen + 20 > m->l3_len)
			return -1;
		u32 doff = t[12] >> 4;
		if (doff < 5 || m->ip_hlen + doff * 4 > m->l3_len)
			return -1;
		m->th_len = doff * 4;
#ifdef TCFLOW_FLOWS
		m->sport = ((__be16 *)t)[0];
		m->dport = ((__be16 *)t)[1];
#endif
	} else if (m->proto == IPPROTO_UDP) {
		if (m->ip_hlen + 8 > m->l3_len)
			return -1;
		m->th_len = 8;
#ifdef TCFLOW_FLOWS
		__be16 *u = nh->pos;
		if ((void *)(u + 2) > data_end)
			return -1;
		m->sport = u[0];
		m->dport = u[1];
#endif
	} else {
		m->th_len = 0;
#ifdef TCFLOW_FLOWS
		u8 *t = nh->pos;
		m->sport = m->dport = 0;
		if (is_icmp(m)) {
			if ((void *)(t + 1) > data_end || m->ip_hlen + 1 > m->l3_len)
				return -1;
			m->sport = t[0];
		}
#endif
	}
	return 0;
}

/* ---- slow path: every case SPEC names, headers copied out ---------------
 * A cursor is an offset into the frame; load() fails when the bytes asked
 * for run past the packet, which makes the packet malformed. */

struct off_cursor {
	void *ctx;
	u32 off;
	int xdp;
};

static __always_inline int load(struct off_cursor *cur, u32 off, void *to, u32 len)
{
	if (cur->xdp)
		return bpf_xdp_load_bytes(cur->ctx, off, to, len);
	return bpf_skb_load_bytes(cur->ctx, off, to, len);
}

/* Past the Ethernet header and up to VLAN_MAX_DEPTH tags: the protocol
 * after them, or -1. A tag the kernel moved into skb metadata (vlan_meta)
 * is one of SPEC's two: with one outside, two more in the frame make three,
 * and the protocol left is a tag, which is not IP (R_OTHER). */
static __always_inline int slow_eth(struct off_cursor *cur, int vlan_meta)
{
	struct ethhdr eth;

	if (load(cur, 0, &eth, sizeof(eth)))
		return -1;
	__be16 proto = eth.h_proto;
	cur->off = sizeof(eth);
#pragma unroll
	for (int i = 0; i < VLAN_MAX_DEPTH; i++) {
		if (!is_vlan(proto) || (vlan_meta && i == VLAN_MAX_DEPTH - 1))
			break;
		struct vlan_hdr vh;
		if (load(cur, cur->off, &vh, sizeof(vh)))
			return -1;
		proto = vh.encap_proto;
		cur->off += sizeof(vh);
	}
	return proto;
}

/* The upper-layer protocol after an IPv4 header, or -1 if malformed. */
static __always_inline int slow_ipv4(struct off_cursor *cur, u64 avail, u32 segs,
				     struct meta *m, int *nonfirst)
{
	struct iphdr iph;

	if (load(cur, cur->off, &iph, sizeof(iph)))
		return -1;
	if (iph.version != 4 || iph.ihl < 5)
		return -1;
	u32 hlen = iph.ihl * 4;
	u64 len = segs > 1 ? avail : bpf_ntohs(iph.tot_len);
	if (len < hlen || len > avail)
		return -1;
	m->l3_len = len;
	m->ip_hlen = hlen;
	m->v6 = 0;
	m->local = v4_local(iph.saddr, iph.daddr);
	*nonfirst = (bpf_ntohs(iph.frag_off) & 0x1fff) != 0;
#ifdef TCFLOW_FLOWS
	flow_addrs4(m, iph.saddr, iph.daddr);
	m->frag_id = iph.id;
	m->frag = *nonfirst ? FRAG_LATER : (bpf_ntohs(iph.frag_off) & 0x2000) ? FRAG_FIRST : FRAG_NONE;
#endif
	cur->off += hlen;
	return iph.protocol;
}

/* The upper-layer protocol after an IPv6 header and its extension headers,
 * or -1 if malformed. AH (51), ESP (50) and anything unknown end the walk as
 * the upper layer; a chain longer than IPV6_EXT_MAX leaves the protocol on an
 * extension header, which is neither TCP nor UDP: the packet counts as raw. */
static __always_inline int slow_ipv6(struct off_cursor *cur, u64 avail, u32 segs,
				     struct meta *m, int *nonfirst)
{
	struct ipv6hdr ip6;

	if (load(cur, cur->off, &ip6, sizeof(ip6)))
		return -1;
	if (ip6.version != 6)
		return -1;
	u64 len = segs > 1 ? avail : sizeof(ip6) + (u64)bpf_ntohs(ip6.payload_len);
	if (len > avail)
		return -1;
	v6_addrs(&ip6, m);
#ifdef TCFLOW_FLOWS
	flow_addrs6(m, &ip6);
	m->frag = FRAG_NONE;
#endif

	u8 nh = ip6.nexthdr;
	u32 hoff = sizeof(ip6);

	cur->off += sizeof(ip6);
#pragma unroll
	for (int i = 0; i < IPV6_EXT_MAX; i++) {
		if (nh == IPPROTO_FRAGMENT) {
			struct frag6_hdr f;
			if (load(cur, cur->off, &f, sizeof(f)))
				return -1;
			nh = f.nexthdr;
			cur->off += sizeof(f);
			hoff += sizeof(f);
#ifdef TCFLOW_FLOWS
			m->frag_id = f.id;
			m->frag = (bpf_ntohs(f.frag_off) & 0xfff8) ? FRAG_LATER :
				  (bpf_ntohs(f.frag_off) & 1) ? FRAG_FIRST : FRAG_NONE;
#endif
			if (bpf_ntohs(f.frag_off) & 0xfff8) {
				*nonfirst = 1;
				break;
			}
		} else if (is_v6_ext(nh)) {
			u8 e[2];
			if (load(cur, cur->off, e, sizeof(e)))
				return -1;
			u32 elen = ((u32)e[1] + 1) * 8;
			nh = e[0];
			cur->off += elen;
			hoff += elen;
		} else {
			break;
		}
		if (hoff > len)
			return -1;
	}
	/* again: the fragment case leaves the loop before the check above */
	if (hoff > len)
		return -1;
	m->l3_len = len;
	m->ip_hlen = hoff;
	return nh;
}

/* The transport header's length into m->th_len; -1 if malformed. */
static __always_inline int slow_l4(struct off_cursor *cur, struct meta *m, int nonfirst)
{
	/* A non-first fragment has no transport header: all of its IP payload
	 * is payload of the protocol its IP (or fragment) header names. */
	m->th_len = 0;
#ifdef TCFLOW_FLOWS
	m->sport = m->dport = 0;
#endif
	if (nonfirst)
		return 0;
	if (m->proto == IPPROTO_TCP) {
		u8 doff;
		if (m->ip_hlen + 20 > m->l3_len || load(cur, cur->off + 12, &doff, 1))
			return -1;
		doff >>= 4;
		if (doff < 5 || m->ip_hlen + doff * 4 > m->l3_len)
			return -1;
		m->th_len = doff * 4;
	} else if (m->proto == IPPROTO_UDP) {
		if (m->ip_hlen + 8 > m->l3_len)
			return -1;
		m->th_len = 8;
	}
#ifdef TCFLOW_FLOWS
	if (m->th_len) {
		__be16 ports[2];
		if (load(cur, cur->off, ports, sizeof(ports)) == 0) {
			m->sport = ports[0];
			m->dport = ports[1];
		}
	} else if (is_icmp(m) && m->ip_hlen + 1 <= m->l3_len) {
		u8 type;
		if (load(cur, cur->off, &type, 1) == 0)
			m->sport = type;
	}
#endif
	return 0;
}

static __always_inline int parse_slow(void *ctx, int xdp, u64 frame_len, u32 segs,
				      int vlan_meta, struct meta *m)
{
	struct off_cursor cur = { .ctx = ctx, .xdp = xdp };
	int nonfirst = 0;
	int proto = slow_eth(&cur, vlan_meta);

	if (proto < 0 || cur.off > frame_len)
		return R_MALFORMED;
	u64 avail = frame_len - cur.off;

	if (proto == bpf_htons(ETH_P_IP))
		proto = slow_ipv4(&cur, avail, segs, m, &nonfirst);
	else if (proto == bpf_htons(ETH_P_IPV6))
		proto = slow_ipv6(&cur, avail, segs, m, &nonfirst);
	else
		return R_OTHER;
	if (proto < 0)
		return R_MALFORMED;
	m->proto = proto;
	return slow_l4(&cur, m, nonfirst) < 0 ? R_MALFORMED : R_IP;
}

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
#ifdef TCFLOW_FLOWS
static __always_inline void flow_add(struct flow_val *v, int dir, u64 l3, u64 l4, u64 n, u32 local)
{
	v->ip_bytes[dir] += l3;
	v->payload[dir] += l4;
	v->packets[dir] += n;
	v->local |= local;
}

/* A cache line's counts into the table; when the table is full, into the
 * overflow of the line's interface. */
static __always_inline void flow_flush(struct flow_line *line)
{
	struct flow_val *v = flows.lookup(&line->key);

	if (!v) {
		if (flows.insert(&line->key, &line->val) == 0)
			return;
		/* another CPU made it meanwhile (-EEXIST), or the table is full */
		v = flows.lookup(&line->key);
		if (!v) {
			u32 at = line->key.slot;
			v = flow_overflow.lookup(&at);
			if (!v)
				return;
		}
	}
#pragma unroll
	for (int d = 0; d < 2; d++) {
		v->ip_bytes[d] += line->val.ip_bytes[d];
		v->payload[d] += line->val.payload[d];
		v->packets[d] += line->val.packets[d];
	}
	v->local |= line->val.local;
}

/* The flow of one packet the classes counted: l3, l4 and n as they added. */
static __always_inline void flow_count(u32 slot, int dir, struct meta *m, u64 l3, u64 l4, u64 n)
{
	__be16 sp = m->sport, dp = m->dport;

	if (m->frag != FRAG_NONE) {
		struct frag_key fk = {};
		fk.id = m->frag_id;
		fk.proto = m->proto;
		fk.hdr6 = m->hdr6;
		__builtin_memcpy(fk.src, m->saddr, 16);
		__builtin_memcpy(fk.dst, m->daddr, 16);
		if (m->frag == FRAG_FIRST) {
			struct frag_val fv = { .sport = sp, .dport = dp };
			flow_frags.update(&fk, &fv);
		} else {
			struct frag_val *fv = flow_frags.lookup(&fk);
			if (fv) {
				sp = fv->sport;
				dp = fv->dport;
			}
		}
	}
	/* endpoint a: the lower (address, port); any fixed order would do */
	const u64 *s = (const u64 *)m->saddr, *d = (const u64 *)m->daddr;
	int swap = s[0] > d[0] || (s[0] == d[0] && (s[1] > d[1] ||
		   (s[1] == d[1] && sp > dp)));
	struct flow_key k = {};
	k.slot = slot;
	k.proto = m->proto;
	k.hdr6 = m->hdr6;
	if (swap) {
		__builtin_memcpy(k.addr_a, m->daddr, 16);
		__builtin_memcpy(k.addr_b, m->saddr, 16);
		k.port_a = dp;
		k.port_b = sp;
	} else {
		__builtin_memcpy(k.addr_a, m->saddr, 16);
		__builtin_memcpy(k.addr_b, m->daddr, 16);
		k.port_a = sp;
		k.port_b = dp;
	}
	/* this interface's side: the source of what it sends, the destination
	 * of what it receives */
	u32 local = (dir == DIR_SEND) == !swap ? 1 : 2;

	/* the line: a multiplicative hash of the key's parts */
	u32 h = (k.slot ^ k.proto ^ k.addr_a[0] ^ k.addr_a[3] ^ k.addr_b[0] ^ k.addr_b[3] ^
		 ((u32)k.port_a << 16 | k.port_b)) * 0x9e3779b1;
	u32 idx = h >> (32 - FLOW_CACHE_BITS);
	struct flow_line *line = flow_cache.lookup(&idx);
	if (!line)
		return; /* never: idx is below the array's size */
	if (line->used) {
		const u32 *a = (const u32 *)&line->key, *b = (const u32 *)&k;
		u32 diff = 0;
#pragma unroll
		for (int i = 0; i < sizeof(k) / 4; i++)
			diff |= a[i] ^ b[i];
		if (diff == 0) {
			flow_add(&line->val, dir, l3, l4, n, local);
			return;
		}
		flow_flush(line);
	}
	__builtin_memcpy(&line->key, &k, sizeof(k));
	__builtin_memset(&line->val, 0, sizeof(line->val));
	line->used = 1;
	flow_add(&line->val, dir, l3, l4, n, local);
}
#endif

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
#ifdef TCFLOW_FLOWS
	flow_count(slot, dir, m, l3, l4, n);
#endif
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
