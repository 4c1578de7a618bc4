// SPDX-License-Identifier: GPL-2.0
/*
 * Flows (`--flows`, built with TCFLOW_FLOWS): every packet the classes count
 * is also counted in one flow of its interface (struct flow_key, abi.h).
 *
 * flows is a per-CPU hash (no atomics, as for counters), bounded: when it is
 * full, a new flow's bytes go to flow_overflow[slot] instead, so that the
 * sum over flows, what user space evicted and the overflow is always the
 * interface's classes. Not LRU: the kernel would drop an entry and its
 * bytes without a word. User space evicts idle flows and keeps their totals.
 *
 * In front of the table, a cache: for each CPU, FLOW_CACHE_SETS sets of
 * FLOW_CACHE_WAYS lines (abi.h; the set count follows the CPU count,
 * abi.flow_cache_set_bits()), each line one flow's counts since it took the
 * line. One plain array, each CPU its own part (a CPU writes only its own,
 * as with a per-CPU map, but a per-CPU array's lookup reads a pointer
 * array first: a second memory access a packet; bench section 10 has the
 * cost with thousands of flows). A packet hashes its key to a set, reads
 * the set's tags (one cache line) and adds to the line whose tag and key
 * are its own: an array lookup the JIT inlines, no hash lookup for a flow
 * the cache holds. A new flow
 * takes a free line of its set, else a random one (never the pathological
 * round-robin miss of LRU when more flows share a set than it has lines),
 * whose counts first move into the table (flow_flush()). User space reads
 * the table and the lines together; a flow's counts are the sum of its
 * entry and its lines.
 */
#ifndef TCFLOW_FLOWS_H
#define TCFLOW_FLOWS_H
#ifdef TCFLOW_FLOWS

BPF_TABLE("percpu_hash", struct flow_key, struct flow_val, flows, 1);
BPF_TABLE("lru_hash", struct frag_key, struct frag_val, flow_frags, 1);
BPF_PERCPU_ARRAY(flow_overflow, struct flow_val, 1);
/* not per-CPU: one array, each CPU its own FLOW_CACHE_SETS sets (the loader
 * sizes it); a per-CPU array would cost a second memory access a packet */
BPF_ARRAY(flow_cache, struct flow_set, 1);

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
	u32 local = (dir == DIR_SEND) == !swap ? FLOW_LOCAL_A : FLOW_LOCAL_B;

	/* the set: a multiplicative hash of the key's parts */
	u32 h = (k.slot ^ k.proto ^ k.addr_a[0] ^ k.addr_a[3] ^ k.addr_b[0] ^ k.addr_b[3] ^
		 ((u32)k.port_a << 16 | k.port_b)) * 0x9e3779b1;
	u32 idx = bpf_get_smp_processor_id() * FLOW_CACHE_SETS + (h >> (32 - FLOW_CACHE_SET_BITS));
	u32 tag = h | 1;
	struct flow_set *set = flow_cache.lookup(&idx);
	if (!set)
		return; /* never: the array has FLOW_CACHE_SETS sets for each possible CPU */
	int free = -1;
#pragma unroll
	for (int w = 0; w < FLOW_CACHE_WAYS; w++) {
		if (set->tag[w] == tag) {
			struct flow_line *line = &set->line[w];
			const u32 *a = (const u32 *)&line->key, *b = (const u32 *)&k;
			u32 diff = 0;
#pragma unroll
			for (int i = 0; i < sizeof(k) / 4; i++)
				diff |= a[i] ^ b[i];
			if (diff == 0) {
				flow_add(&line->val, dir, l3, l4, n, local);
				return;
			}
		} else if (set->tag[w] == 0 && free < 0) {
			free = w;
		}
	}
	u32 w = free >= 0 ? (u32)free : bpf_get_prandom_u32();
	w &= FLOW_CACHE_WAYS - 1;
	struct flow_line *line = &set->line[w];
	if (set->tag[w])
		flow_flush(line);
	__builtin_memcpy(&line->key, &k, sizeof(k));
	__builtin_memset(&line->val, 0, sizeof(line->val));
	line->used = 1;
	set->tag[w] = tag;
	flow_add(&line->val, dir, l3, l4, n, local);
}

#else
static __always_inline void flow_count(u32 slot, int dir, struct meta *m, u64 l3, u64 l4, u64 n) {}
#endif /* TCFLOW_FLOWS */
#endif /* TCFLOW_FLOWS_H */
