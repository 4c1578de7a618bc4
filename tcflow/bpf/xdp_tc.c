// SPDX-License-Identifier: GPL-2.0
/*
 * tcflow datapath: count bytes and packets per attached interface.
 *
 * Three entry points share one parser and one counting function:
 *   tcflow_xdp         XDP, receive direction (the default recv hook)
 *   tcflow_tc_ingress  clsact ingress, receive direction (--ingress tc)
 *   tcflow_tc_egress   clsact egress, send direction
 * All of them only observe: XDP_PASS / TC_ACT_UNSPEC, whatever happens.
 *
 * The byte rules are docs/SPEC.md; tests/traffic_gen/reference.py is the
 * same rules in Python, and the bpf tests compare the two frame by frame.
 *
 * Compile-time switches (passed by tcflow/loader.py as cflags):
 *   C_<CLASS>, NUM_CLASSES  class indices, from tcflow/classes.py
 *   TCFLOW_MAX_IFACES  size of the interface and counter maps
 *   TCFLOW_PIN_DIR     pin the maps under this bpffs directory (string), and
 *                      add a third, meta, that describes each attachment
 */
#include <uapi/linux/bpf.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/if_packet.h>
#include <uapi/linux/in.h>
#include <uapi/linux/ip.h>
#include <uapi/linux/ipv6.h>
#include <uapi/linux/pkt_cls.h>

#define VLAN_MAX_DEPTH 2  /* 802.1Q / 802.1ad tags parsed (SPEC) */
#define IPV6_EXT_MAX 8    /* IPv6 extension headers walked (SPEC) */

#ifndef TCFLOW_MAX_IFACES
#define TCFLOW_MAX_IFACES 4096
#endif

/*
 * Class indices come from tcflow/classes.py, the only list of them, as
 * cflags: -DC_L4_TCP_SEND_V4=0 ... -DNUM_CLASSES=26 (classes.cflags()).
 * CLASS(stem, v6) picks the IPv4 or IPv6 index of one class; the compiler
 * folds it to one add.
 */
#ifndef NUM_CLASSES
#error "compile with tcflow.classes.cflags(): the class indices come from there"
#endif
#define CLASS(stem, v6) (C_##stem##_V4 + (v6) * (C_##stem##_V6 - C_##stem##_V4))

#define DIR_RECV 0
#define DIR_SEND 1

#define IFACE_F_INCLUDE_LOCAL 1

/*
 * Counters are keyed by {netns cookie, ifindex}: ifindexes repeat across
 * namespaces. No helper gives the interface's namespace: XDP may not call
 * bpf_get_netns_cookie(), and for TC it answers the socket's namespace, or
 * init_net's when there is no socket (measured on 6.18 at clsact ingress).
 * So the loader writes the cookie into this 64-bit immediate before each
 * load: one compile, each program loaded once per namespace it serves.
 */
#define TCFLOW_NETNS_PLACEHOLDER "0x7cf1c00c1e5eed01"

static __always_inline u64 netns_cookie(void)
{
	u64 cookie;

	asm volatile("%0 = " TCFLOW_NETNS_PLACEHOLDER " ll" : "=r"(cookie));
	return cookie;
}

struct iface_key {
	u64 netns_cookie;
	u32 ifindex;
	u32 pad;
};

struct iface_val {
	u32 slot;  /* index into counters, chosen by user space */
	u32 flags; /* IFACE_F_* */
};

struct counters {
	u64 bytes[NUM_CLASSES];
	u64 packets[NUM_CLASSES];
};

/*
 * counters is per-CPU, so the plain "+=" below needs no atomics: XDP runs in
 * softirq, and the TC hooks run with bottom halves disabled, so two of our
 * programs never interleave on one CPU. User space sums the CPUs.
 */
#ifdef TCFLOW_PIN_DIR
BPF_TABLE_PINNED("hash", struct iface_key, struct iface_val, ifaces,
		 TCFLOW_MAX_IFACES, TCFLOW_PIN_DIR "/ifaces");
BPF_TABLE_PINNED("percpu_array", u32, struct counters, counters,
		 TCFLOW_MAX_IFACES, TCFLOW_PIN_DIR "/counters");

/*
 * What a pinned attachment is, for `tcflow show/status/detach` after the
 * process that attached it is gone. Written and read by user space only
 * (tcflow/pins.py mirrors this layout); no program touches it.
 */
struct iface_meta {
	u64 netns_cookie;
	u64 netns_inode;
	u64 attached_ns;  /* CLOCK_REALTIME, ns */
	u32 ifindex;
	u32 pid;          /* of the tcflow that attached it */
	u8 in_use;
	u8 ingress;       /* 1 xdp, 2 tc */
	u8 xdp_mode;      /* 0 none, 1 native, 2 generic */
	u8 created_clsact;
	u32 flags;        /* IFACE_F_* as in ifaces */
	char ifname[16];
	char netns[112];  /* the label the user gave, or "" */
	char netns_path[128];
};
BPF_TABLE_PINNED("array", u32, struct iface_meta, meta,
		 TCFLOW_MAX_IFACES, TCFLOW_PIN_DIR "/meta");
#else
BPF_HASH(ifaces, struct iface_key, struct iface_val, TCFLOW_MAX_IFACES);
BPF_PERCPU_ARRAY(counters, struct counters, TCFLOW_MAX_IFACES);
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
	R_MALFORMED,  /* a header runs past the packet */
	R_SHORT,      /* a header runs past the linear data: meta.need says how far */
};

struct meta {
	u32 l3_len;  /* IP bytes of this skb (the whole aggregate for GSO) */
	u32 ip_hlen; /* IP header, IPv4 options or IPv6 extension headers included */
	u32 th_len;  /* transport header; 0 for raw and non-first fragments */
	u32 need;    /* R_SHORT: bytes from data that the parser needs linear */
	u8 proto;    /* upper-layer protocol; only 6 and 17 are not raw */
	u8 v6;       /* family after IPv4-mapped addresses count as IPv4 */
	u8 local;
};

/* Bounds check before a read: the verifier insists, and a short header is
 * either malformed or (TC only) not yet pulled into the linear data. */
#define NEED(ptr, size)                                              \
	do {                                                         \
		if ((void *)(ptr) + (size) > data_end) {             \
			m->need = (void *)(ptr) + (size) - data;      \
			return R_SHORT;                              \
		}                                                    \
	} while (0)

static __always_inline int is_vlan(__be16 proto)
{
	return proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD);
}

static __always_inline int is_v4_loopback(__be32 a)
{
	return (bpf_ntohl(a) >> 24) == 127;
}

static __always_inline int parse_ipv4(void *data, void *data_end, void *pos,
				      u64 avail, u32 segs, struct meta *m,
				      void **l4, int *nonfirst)
{
	struct iphdr *iph = pos;

	NEED(iph, sizeof(*iph));
	if (iph->version != 4 || iph->ihl < 5)
		return R_MALFORMED;
	u32 hlen = iph->ihl * 4;
	/* GSO may leave tot_len 0 (or stale): the aggregate's length is the
	 * skb's. A plain packet is what its header says, padding excluded. */
	u64 len = segs > 1 ? avail : bpf_ntohs(iph->tot_len);
	if (len < hlen || len > avail)
		return R_MALFORMED;
	m->l3_len = len;
	m->ip_hlen = hlen;
	m->proto = iph->protocol;
	m->local = is_v4_loopback(iph->saddr) || is_v4_loopback(iph->daddr) ||
		   iph->saddr == iph->daddr;
	*nonfirst = (bpf_ntohs(iph->frag_off) & 0x1fff) != 0;
	*l4 = pos + hlen;
	return R_IP;
}

static __always_inline int v6_is_mapped(const __be32 *a)
{
	return a[0] == 0 && a[1] == 0 && a[2] == bpf_htonl(0x0000ffff);
}

static __always_inline int v6_is_loopback(const __be32 *a)
{
	return a[0] == 0 && a[1] == 0 && a[2] == 0 && a[3] == bpf_htonl(1);
}

static __always_inline int parse_ipv6(void *data, void *data_end, void *pos,
				      u64 avail, u32 segs, struct meta *m,
				      void **l4, int *nonfirst)
{
	struct ipv6hdr *ip6 = pos;

	NEED(ip6, sizeof(*ip6));
	if (ip6->version != 6)
		return R_MALFORMED;
	u64 len = segs > 1 ? avail : 40 + (u64)bpf_ntohs(ip6->payload_len);
	if (len > avail)
		return R_MALFORMED;

	const __be32 *s = ip6->saddr.in6_u.u6_addr32;
	const __be32 *d = ip6->daddr.in6_u.u6_addr32;
	int smap = v6_is_mapped(s), dmap = v6_is_mapped(d);
	m->v6 = !(smap || dmap);
	m->local = v6_is_loopback(s) || v6_is_loopback(d) ||
		   (smap && is_v4_loopback(s[3])) ||
		   (dmap && is_v4_loopback(d[3])) ||
		   (s[0] == d[0] && s[1] == d[1] && s[2] == d[2] && s[3] == d[3]);

	u8 nh = ip6->nexthdr;
	u32 hoff = sizeof(*ip6);
	void *cur = ip6 + 1;

	/* AH (51), ESP (50) and anything unknown end the walk as the upper
	 * layer; a chain longer than IPV6_EXT_MAX leaves nh on an extension
	 * header, which is neither TCP nor UDP, so the packet counts as raw. */
#pragma unroll
	for (int i = 0; i < IPV6_EXT_MAX; i++) {
		if (nh == IPPROTO_HOPOPTS || nh == IPPROTO_ROUTING ||
		    nh == IPPROTO_DSTOPTS) {
			u8 *e = cur;
			NEED(e, 2);
			u32 elen = ((u32)e[1] + 1) * 8;
			nh = e[0];
			cur += elen;
			hoff += elen;
		} else if (nh == IPPROTO_FRAGMENT) {
			struct frag6_hdr *f = cur;
			NEED(f, sizeof(*f));
			nh = f->nexthdr;
			cur = f + 1;
			hoff += sizeof(*f);
			if (bpf_ntohs(f->frag_off) & 0xfff8) {
				*nonfirst = 1;
				break;
			}
		} else {
			break;
		}
		if (hoff > len)
			return R_MALFORMED;
	}
	/* again: the fragment case leaves the loop before the check above */
	if (hoff > len)
		return R_MALFORMED;
	m->l3_len = len;
	m->ip_hlen = hoff;
	m->proto = nh;
	*l4 = cur;
	return R_IP;
}

static __always_inline int parse(void *data, void *data_end, u64 frame_len,
				 u32 segs, struct meta *m)
{
	struct ethhdr *eth = data;

	/* A frame shorter than an Ethernet header is not on the wire. */
	if ((void *)(eth + 1) > data_end)
		return frame_len < sizeof(*eth) ? R_MALFORMED :
		       (m->need = sizeof(*eth), R_SHORT);
	__be16 proto = eth->h_proto;
	void *pos = eth + 1;

#pragma unroll
	for (int i = 0; i < VLAN_MAX_DEPTH; i++) {
		if (!is_vlan(proto))
			break;
		struct vlan_hdr *vh = pos;
		NEED(vh, sizeof(*vh));
		proto = vh->encap_proto;
		pos = vh + 1;
	}

	u64 l3_off = pos - data;
	if (l3_off > frame_len)
		return R_MALFORMED;
	u64 avail = frame_len - l3_off;
	void *l4 = pos;
	int nonfirst = 0;
	int r;

	if (proto == bpf_htons(ETH_P_IP))
		r = parse_ipv4(data, data_end, pos, avail, segs, m, &l4, &nonfirst);
	else if (proto == bpf_htons(ETH_P_IPV6))
		r = parse_ipv6(data, data_end, pos, avail, segs, m, &l4, &nonfirst);
	else
		return R_OTHER;
	if (r != R_IP)
		return r;

	/* A non-first fragment has no transport header: all of its IP payload
	 * is payload of the protocol its IP (or fragment) header names. */
	if (nonfirst) {
		m->th_len = 0;
	} else if (m->proto == IPPROTO_TCP) {
		if (m->ip_hlen + 20 > m->l3_len)
			return R_MALFORMED;
		u8 *t = l4;
		NEED(t, 13);
		u32 doff = t[12] >> 4;
		if (doff < 5 || m->ip_hlen + doff * 4 > m->l3_len)
			return R_MALFORMED;
		m->th_len = doff * 4;
	} else if (m->proto == IPPROTO_UDP) {
		if (m->ip_hlen + 8 > m->l3_len)
			return R_MALFORMED;
		m->th_len = 8;
	} else {
		m->th_len = 0;
	}
	return R_IP;
}

static __always_inline void add(struct counters *c, u32 idx, u64 bytes, u64 pkts)
{
	if (idx >= NUM_CLASSES)
		return; /* never taken; keeps the verifier's index bounded */
	c->bytes[idx] += bytes;
	c->packets[idx] += pkts;
}

/* Apply SPEC's byte rules to a parsed packet and bump its classes. */
static __always_inline void account(struct counters *c, u32 flags, int dir,
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
	}
}

static __always_inline struct counters *lookup_iface(u64 cookie, u32 ifindex,
						     u32 *flags)
{
	struct iface_key k = {};
	k.netns_cookie = cookie;
	k.ifindex = ifindex;
	struct iface_val *v = ifaces.lookup(&k);
	if (!v)
		return NULL;
	*flags = v->flags;
	u32 slot = v->slot;
	return counters.lookup(&slot);
}

int tcflow_xdp(struct xdp_md *ctx)
{
	u32 flags = 0;
	struct counters *c = lookup_iface(netns_cookie(), ctx->ingress_ifindex, &flags);
	if (!c)
		return XDP_PASS;

	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	u64 frame_len = data_end - data;
	struct meta m = {};
	int r = parse(data, data_end, frame_len, 1, &m);
	/* XDP sees the whole frame: a short header is a malformed one. */
	account(c, flags, DIR_RECV, r == R_SHORT ? R_MALFORMED : r, &m,
		frame_len, 1);
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

	u32 flags = 0;
	struct counters *c = lookup_iface(netns_cookie(), skb->ifindex, &flags);
	if (!c)
		return TC_ACT_UNSPEC;

	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct meta m = {};
	int r;

	/* The kernel moves the outer VLAN tag into skb metadata before clsact
	 * ingress (and a VLAN device may do so on send). It counts toward
	 * SPEC's two tags: with one outside, two more in the frame make three.
	 * Checked here rather than in parse() to keep the verifier's state
	 * count down (the parser is inlined twice in this program). */
	if (skb->vlan_present) {
		struct ethhdr *eth = data;
		struct vlan_hdr *vh = (void *)(eth + 1);
		if ((void *)(vh + 1) <= data_end && is_vlan(eth->h_proto) &&
		    is_vlan(vh->encap_proto)) {
			r = R_OTHER;
			goto count;
		}
	}
	r = parse(data, data_end, skb->len, skb->gso_segs, &m);

	/* Headers beyond the linear data: pull just what the parser needs and
	 * parse again (the helper refuses more than the packet holds). Pulling
	 * unconditionally would unclone every TCP skb. Everything the second
	 * parse uses is read afresh from the skb: values the first parse
	 * narrowed would keep the verifier from merging its many exits. */
	if (r == R_SHORT) {
		r = R_MALFORMED;
		if (bpf_skb_pull_data(skb, m.need) == 0) {
			struct meta m2 = {};
			data = (void *)(long)skb->data;
			data_end = (void *)(long)skb->data_end;
			r = parse(data, data_end, skb->len, skb->gso_segs, &m2);
			if (r == R_SHORT)
				r = R_MALFORMED;
			m = m2;
		}
	}
count:;
	/* other/malformed count wire bytes: a tag held in metadata is one */
	u64 frame_len = skb->len;
	u64 wire_len = frame_len + (skb->vlan_present ? 4 : 0);
	account(c, flags, dir, r, &m, r == R_IP ? frame_len : wire_len,
		skb->gso_segs);
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
