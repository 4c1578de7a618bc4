// SPDX-License-Identifier: GPL-2.0
/*
 * The datapath's binary interface: every struct and constant that user
 * space shares with the programs. Its Python twin is tcflow/bpf/abi.py,
 * declared once there too; tests/bpf/test_abi.py compiles this header and
 * checks every size, offset and constant of one against the other.
 */
#ifndef TCFLOW_ABI_H
#define TCFLOW_ABI_H

/*
 * Class cells come from tcflow/model/classes.py, the only list of the
 * classes, as cflags: -DC_L4_TCP_SEND_V4=0 ... -DNUM_CLASSES=26
 * (classes.cflags()).
 */
#ifndef NUM_CLASSES
#error "compile with tcflow.model.classes.cflags(): the class cells come from there"
#endif

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
 * Flows (`--flows`): one entry per {interface slot, protocol, both
 * endpoints}, the two directions of a connection folded into one by putting
 * the lower (address, port) first as endpoint a. For ICMP and ICMPv6 the
 * packet's source endpoint's port field holds the type and the other is 0;
 * other protocols have no ports. Addresses are as in the header (an IPv6
 * header's IPv4-mapped address stays 16 bytes; its bytes count as IPv4, as
 * everywhere in SPEC).
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
	u32 local;       /* FLOW_LOCAL_A | FLOW_LOCAL_B */
	u32 pad;
};

#define FLOW_LOCAL_A 1 /* flow_val.local: endpoint a is this interface's side */
#define FLOW_LOCAL_B 2 /* ... endpoint b is */

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
 * The per-CPU cache in front of the flow table (flows.h): for each CPU,
 * FLOW_CACHE_SETS sets of FLOW_CACHE_WAYS lines, in one array (entry
 * cpu * FLOW_CACHE_SETS + set), each line one flow's counts since it took
 * the line. A set's tags (a hash of the key, 0: the line is free) come
 * first, so that a packet reads one cache line to find its flow's line.
 */
#ifndef FLOW_CACHE_SET_BITS /* from build.cflags(): abi.flow_cache_set_bits() */
#define FLOW_CACHE_SET_BITS 9
#endif
#define FLOW_CACHE_SETS (1 << FLOW_CACHE_SET_BITS)
#define FLOW_CACHE_WAYS 4

struct flow_line {
	struct flow_key key;
	u32 used;
	struct flow_val val;
};

struct flow_set {
	u32 tag[FLOW_CACHE_WAYS];
	struct flow_line line[FLOW_CACHE_WAYS];
};

#endif /* TCFLOW_ABI_H */
