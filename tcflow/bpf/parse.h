// SPDX-License-Identifier: GPL-2.0
/*
 * The parsers: Ethernet, VLAN, IPv4, IPv6 and its extension headers, TCP,
 * UDP and ICMP type, into a struct meta that account() (xdp_tc.c) counts.
 *
 * Two parsers, one result. The fast path reads the common case straight
 * from the packet: no VLAN tag, IPv4 without options and not a fragment or
 * IPv6 without extension headers, headers in the linear data. Anything else
 * (or anything it doubts) goes to the slow path, which walks every case
 * SPEC names by copying each header out with bpf_{skb,xdp}_load_bytes: it
 * needs no linear data (no pull), and the verifier walks it once.
 *
 * With TCFLOW_FLOWS the parsers also keep what a flow needs (addresses,
 * ports or ICMP type, fragment id) through the flow_note_* helpers below;
 * without it those are empty and the compiler leaves nothing of them.
 */
#ifndef TCFLOW_PARSE_H
#define TCFLOW_PARSE_H

#define VLAN_MAX_DEPTH 2  /* 802.1Q / 802.1ad tags parsed (SPEC) */
#define IPV6_EXT_MAX 8    /* IPv6 extension headers walked (SPEC) */

#define FRAG_NONE 0
#define FRAG_FIRST 1 /* offset 0, more fragments: its ports are stored */
#define FRAG_LATER 2 /* offset > 0: ports looked up */

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

/* ---- what --flows keeps of a packet --------------------------------------- */
#ifdef TCFLOW_FLOWS
#define FLOWS_ON 1
/* the fast path leaves every fragment to the slow path, which keeps ports */
#define FAST_FRAG_MASK 0x3fff

static __always_inline void flow_note_addrs4(struct meta *m, __be32 s, __be32 d)
{
	m->saddr[0] = s;
	m->saddr[1] = m->saddr[2] = m->saddr[3] = 0;
	m->daddr[0] = d;
	m->daddr[1] = m->daddr[2] = m->daddr[3] = 0;
	m->hdr6 = 0;
}

static __always_inline void flow_note_addrs6(struct meta *m, const struct ipv6hdr *ip6)
{
	__builtin_memcpy(m->saddr, &ip6->saddr, 16);
	__builtin_memcpy(m->daddr, &ip6->daddr, 16);
	m->hdr6 = 1;
}

static __always_inline void flow_note_frag(struct meta *m, u8 frag)
{
	m->frag = frag;
}

static __always_inline void flow_note_frag_id(struct meta *m, __be32 id)
{
	m->frag_id = id;
}

static __always_inline void flow_note_ports(struct meta *m, __be16 sport, __be16 dport)
{
	m->sport = sport;
	m->dport = dport;
}

static __always_inline void flow_note_sport(struct meta *m, __be16 sport)
{
	m->sport = sport;
}

static __always_inline int is_icmp(struct meta *m)
{
	return m->proto == (m->hdr6 ? IPPROTO_ICMPV6 : IPPROTO_ICMP);
}
#else
#define FLOWS_ON 0
/* the fast path takes first fragments (their transport header is there) */
#define FAST_FRAG_MASK 0x1fff

static __always_inline void flow_note_addrs4(struct meta *m, __be32 s, __be32 d) {}
static __always_inline void flow_note_addrs6(struct meta *m, const struct ipv6hdr *ip6) {}
static __always_inline void flow_note_frag(struct meta *m, u8 frag) {}
static __always_inline void flow_note_frag_id(struct meta *m, __be32 id) {}
static __always_inline void flow_note_ports(struct meta *m, __be16 sport, __be16 dport) {}
static __always_inline void flow_note_sport(struct meta *m, __be16 sport) {}
static __always_inline int is_icmp(struct meta *m) { return 0; }
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
	/* version 4 without options, and not a fragment the fast path leaves
	 * to the slow one (FAST_FRAG_MASK) */
	if (*(u8 *)iph != 0x45 || (iph->frag_off & bpf_htons(FAST_FRAG_MASK)))
		return -1;
	/* GSO may leave tot_len 0 (or stale): the aggregate's length is the
	 * skb's. A plain packet is what its header says, padding excluded. */
	u64 len = segs > 1 ? avail : bpf_ntohs(iph->tot_len);
	if (len < sizeof(*iph) || len > avail)
		return -1;
	m->l3_len = len;
	m->ip_hlen = sizeof(*iph);
	m->v6 = 0;
	m->local = v4_local(iph->saddr, iph->daddr);
	flow_note_addrs4(m, iph->saddr, iph->daddr);
	flow_note_frag(m, FRAG_NONE);
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
	flow_note_addrs6(m, ip6);
	flow_note_frag(m, FRAG_NONE);
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
		flow_note_ports(m, ((__be16 *)t)[0], ((__be16 *)t)[1]);
	} else if (m->proto == IPPROTO_UDP) {
		if (m->ip_hlen + 8 > m->l3_len)
			return -1;
		m->th_len = 8;
		if (FLOWS_ON) {
			__be16 *u = nh->pos;
			if ((void *)(u + 2) > data_end)
				return -1;
			flow_note_ports(m, u[0], u[1]);
		}
	} else {
		m->th_len = 0;
		if (FLOWS_ON) {
			u8 *t = nh->pos;
			flow_note_ports(m, 0, 0);
			if (is_icmp(m)) {
				if ((void *)(t + 1) > data_end || m->ip_hlen + 1 > m->l3_len)
					return -1;
				flow_note_sport(m, t[0]);
			}
		}
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
	flow_note_addrs4(m, iph.saddr, iph.daddr);
	flow_note_frag_id(m, iph.id);
	flow_note_frag(m, *nonfirst ? FRAG_LATER : (bpf_ntohs(iph.frag_off) & 0x2000) ? FRAG_FIRST : FRAG_NONE);
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
	flow_note_addrs6(m, &ip6);
	flow_note_frag(m, FRAG_NONE);

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
			flow_note_frag_id(m, f.id);
			flow_note_frag(m, (bpf_ntohs(f.frag_off) & 0xfff8) ? FRAG_LATER :
				       (bpf_ntohs(f.frag_off) & 1) ? FRAG_FIRST : FRAG_NONE);
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
	flow_note_ports(m, 0, 0);
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
	if (!FLOWS_ON)
		return 0;
	if (m->th_len) {
		__be16 ports[2];
		if (load(cur, cur->off, ports, sizeof(ports)) == 0)
			flow_note_ports(m, ports[0], ports[1]);
	} else if (is_icmp(m) && m->ip_hlen + 1 <= m->l3_len) {
		u8 type;
		if (load(cur, cur->off, &type, 1) == 0)
			flow_note_sport(m, type);
	}
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

#endif /* TCFLOW_PARSE_H */
