"""Flows (`--flows`): which five-tuples carry an interface's bytes.

The datapath (``TCFLOW_FLOWS`` in tcflow/bpf/xdp_tc.c) keeps, per interface
slot, a per-CPU hash keyed by {protocol, endpoint a, endpoint b}, the two
directions folded into one entry, with IP bytes, payload bytes and packets
received and sent, counted by the same rules as the classes; in front of
it, a per-CPU cache of lines that hold a busy flow's latest counts (the
datapath moves a line into the table when another flow takes it). This
module reads both, sums the CPUs, and keeps three more things per slot:

- ``evicted``: the totals of flows taken out of the table. A flow is
  evicted when it has not moved for ``idle_s``, or, when the table is over
  HIGH_WATER full, the flows that moved least recently, down to LOW_WATER.
  Their bytes stay counted here, never dropped. What of such a flow still
  sits in a cache line is remembered (``handed_over``), so that it does not
  count again when the line moves it into the table.
- ``overflow``: what the datapath counted while the table was full (it
  cannot add a flow then; its bytes go to the slot's overflow cell).
- ``unattributed``: the interface's IP classes minus flows, evicted and
  overflow. A snapshot reads the flows, then the classes: under traffic it
  is what arrived between the two reads (never negative). At rest it is 0,
  except for a packet that lands on an entry in the instant it is deleted
  (the kernel frees it after the packet's program ends): said, not hidden.

So for every interface: flows + evicted + overflow + unattributed = classes.
"""

from __future__ import annotations

import ctypes
import heapq
import ipaddress
import threading
import time
from typing import Any, Callable, Iterable, Optional

from tcflow.bpf import libbpf
from tcflow.bpf.abi import (
    DIR_RECV,
    DIR_SEND,
    FLOW_CACHE_WAYS,
    FLOW_KEY_SIZE,
    FLOW_LINE_SIZE,
    FLOW_LOCAL_B,
    FLOW_SET_SIZE,
    FLOW_VAL_SIZE,
    FlowEvicted,
    FlowKey,
    FlowLine,
    FlowVal,
    packer,
)
from tcflow.bpf.loader import Datapath
from tcflow.model.flows import Counts, Flow, SlotFlows

IDLE_S = 30.0          # a flow unchanged this long is evicted
HIGH_WATER = 0.9       # over this share of the table: evict the stalest ...
LOW_WATER = 0.8        # ... down to this share
DEFAULT_TOP = 10
RECV, SEND = DIR_RECV, DIR_SEND
_KEY = packer(FlowKey)
_VAL = packer(FlowVal)
_LINE = packer(FlowLine, whole=("key",))
_TAGS = 4 * FLOW_CACHE_WAYS  # a set's tags, before its lines
TABLE_CHUNK = 1024  # table entries a read takes at a time (160 kB on 2 CPUs)
CACHE_CHUNK = 512   # cache sets (one CPU's each) a read takes at a time (221 kB)


def _addr(raw: bytes, hdr6: int) -> str:
    return str(ipaddress.IPv6Address(raw)) if hdr6 else str(ipaddress.IPv4Address(raw[:4]))


def _family(raw_a: bytes, raw_b: bytes, hdr6: int) -> str:
    if not hdr6:
        return "ipv4"
    mapped = b"\0" * 10 + b"\xff\xff"
    return "ipv4" if raw_a[:12] == mapped or raw_b[:12] == mapped else "ipv6"


def decode(key: bytes, counts: Counts) -> Flow:
    slot, proto, hdr6, _, pa, pb, aa, ab = _KEY.unpack(key[:FLOW_KEY_SIZE])
    icmp = proto == (58 if hdr6 else 1)
    ports = proto in (6, 17)
    port_a = int.from_bytes(pa, "big") if ports else None
    port_b = int.from_bytes(pb, "big") if ports else None
    return Flow(slot, proto, (_addr(aa, hdr6), port_a), (_addr(ab, hdr6), port_b),
                # the type sits in the packet source's port field, and the other is 0
                int.from_bytes(pa, "little") | int.from_bytes(pb, "little") if icmp else None,
                _family(aa, ab, hdr6), counts)


class FlowTable:
    """The user-space side of one Datapath's flow map. Thread-safe."""

    def __init__(self, dp: Datapath, idle_s: float = IDLE_S, owns: Optional[Callable[[int], bool]] = None):
        """``owns``: which slots this table may evict from (with --pin, other
        tcflow processes count other slots into the same pinned maps)."""
        self.dp, self.idle_s = dp, idle_s
        self.owns = owns or (lambda slot: True)
        self.capacity = dp.options.flow_entries
        self.fd = dp.map_fd("flows")
        self.lock = threading.Lock()
        self.evicted: dict[int, Counts] = {}
        self.evictions: dict[int, int] = {}
        # per flow, one tuple (the agent grows about 4.8 MiB for 10,000 flows, bench section 8):
        # (IP bytes recv, IP bytes sent, packets, when packets last changed, rate recv, rate sent)
        self.seen: dict[bytes, tuple[int, int, int, float, float, float]] = {}
        self.last_t: Optional[float] = None
        # per flow taken out while part of it stayed in a cache line: that part
        self.handed_over: dict[bytes, list[int]] = {}
        self._cache: dict[bytes, list[int]] = {}
        self._in_table: set[bytes] = set()
        self._emptied: list[bytes] = []
        # the last tick's read, less what it evicted: (when, flows), for a
        # report that may serve a read that recent (report(max_age=...))
        self._shared: Optional[tuple[float, dict[bytes, tuple[int, ...]]]] = None
        self._bufs: Optional[tuple[tuple[Any, Any], tuple[Any, Any]]] = None  # _physical()'s read buffers
        # --pin: the evicted totals live in a pinned map too, so that a restart
        # (even after kill -9) carries them on; read back when a slot is adopted
        self._kept = dp.map_fd("flow_evicted") if "flow_evicted" in dp.map_names() else None
        self._handed = dp.map_fd("flow_handed") if "flow_handed" in dp.map_names() else None
        if self._handed is not None:
            self._load_handed(None)

    def _load_handed(self, slot: Optional[int]) -> None:
        """``handed_over`` as the pinned map has it (one slot's keys, or all)."""
        assert self._handed is not None
        for k in libbpf.map_keys(self._handed, FlowKey):
            raw = bytes(k)
            if slot is not None and _slot_of(raw) != slot:
                continue
            val = (ctypes.c_uint64 * 6)()
            if libbpf.map_lookup(self._handed, k, val):
                self.handed_over[raw] = list(val)

    def _hand(self, key: bytes, cached: list[int]) -> None:
        """Remember what of a flow was handed to ``evicted`` while it stayed in
        a cache line (nothing: forget it); with --pin in the pinned map too."""
        if any(cached):
            self.handed_over[key] = cached
        else:
            self.handed_over.pop(key, None)
        if self._handed is not None:
            k = ctypes.create_string_buffer(key, FLOW_KEY_SIZE)
            if any(cached):
                libbpf.map_update(self._handed, k, (ctypes.c_uint64 * 6)(*cached))
            else:
                libbpf.map_delete(self._handed, k)

    def adopt(self, slot: int) -> None:
        """A pinned slot taken over: its evicted totals as the pinned map has them."""
        if self._kept is None:
            return
        val = FlowEvicted()
        with self.lock:
            if libbpf.map_lookup(self._kept, ctypes.c_uint32(slot), val) and (any(val.counts) or val.evictions):
                self.evicted[slot], self.evictions[slot] = Counts(*val.counts), int(val.evictions)
            if self._handed is not None:
                self._load_handed(slot)

    def _keep(self, slot: int) -> None:
        """Write one slot's evicted totals to the pinned map (--pin)."""
        if self._kept is None:
            return
        c = self.evicted.get(slot, Counts())
        val = FlowEvicted((ctypes.c_uint64 * 6)(c.ip_recv, c.ip_send, c.payload_recv, c.payload_send,
                                                c.packets_recv, c.packets_send), self.evictions.get(slot, 0))
        libbpf.map_update(self._kept, ctypes.c_uint32(slot), val)

    # -- reading -------------------------------------------------------------
    def _physical(self) -> tuple[dict[bytes, list[int]], dict[bytes, list[int]], set[bytes]]:
        """What the kernel holds per key, CPUs summed, table and cache lines
        together: ([IP bytes recv, sent, payload recv, sent, packets recv,
        sent, local bits]); the cache lines' part alone; the keys in the table."""
        ncpus = self.dp.ncpus
        if self._bufs is None:  # kept, and small: the table and the cache are read a chunk at a time
            self._bufs = ((ctypes.create_string_buffer(FLOW_KEY_SIZE * TABLE_CHUNK),
                           ctypes.create_string_buffer(FLOW_VAL_SIZE * ncpus * TABLE_CHUNK)),
                          (ctypes.create_string_buffer(4 * CACHE_CHUNK),
                           ctypes.create_string_buffer(FLOW_SET_SIZE * CACHE_CHUNK)))
        phys: dict[bytes, list[int]] = {}
        stride = FLOW_VAL_SIZE * ncpus
        unpack = _VAL.unpack_from
        for keys, vals, n in libbpf.lookup_batches(self.fd, FLOW_KEY_SIZE, stride, TABLE_CHUNK, self._bufs[0]):
            for i in range(n):
                k = keys[i * FLOW_KEY_SIZE:(i + 1) * FLOW_KEY_SIZE]
                base = i * stride
                ir, is_, pr, ps, kr, ks, local, _ = unpack(vals, base)
                for cpu in range(1, ncpus):
                    a, b, c, d, e, f, lb, _ = unpack(vals, base + cpu * FLOW_VAL_SIZE)
                    ir, is_, pr, ps, kr, ks, local = ir + a, is_ + b, pr + c, ps + d, kr + e, ks + f, local | lb
                phys[k] = [ir, is_, pr, ps, kr, ks, local]
        in_table = set(phys)
        cache: dict[bytes, list[int]] = {}
        set_stride = FLOW_SET_SIZE  # one CPU's set an entry (flow_cache is one array, each CPU its sets)
        for _, sets, n in libbpf.lookup_batches(self.dp.map_fd("flow_cache"), 4, set_stride, CACHE_CHUNK,
                                                self._bufs[1]):
            # the taken lines, from the sets' tags (0: free), read a column at a
            # time: most of a large cache is free, and this skips it at C speed
            words = memoryview(sets).cast("B")[:n * set_stride].cast("I")
            for way in range(FLOW_CACHE_WAYS):
                line_at = _TAGS + way * FLOW_LINE_SIZE
                for i, tag in enumerate(words[way::FLOW_SET_SIZE // 4].tolist()):
                    if not tag:
                        continue
                    k, used, *v, local, _ = _LINE.unpack_from(sets, i * FLOW_SET_SIZE + line_at)
                    if not used:
                        continue
                    v.append(local)
                    for held in (cache, phys):
                        into = held.get(k)
                        if into is None:
                            held[k] = v[:]  # the common case: the flow's only part
                            continue
                        for j in range(6):
                            into[j] += v[j]
                        into[6] |= local
        return phys, cache, in_table

    def _read(self) -> dict[bytes, tuple[int, ...]]:
        """Every flow: key -> (IP bytes recv, sent, payload recv, sent,
        packets recv, sent, local bits), less what was already handed to
        ``evicted`` while it stayed in a cache line. Lock held."""
        phys, self._cache, self._in_table = self._physical()
        out: dict[bytes, tuple[int, ...]] = {}
        self._emptied = []
        for k, v in phys.items():
            done = self.handed_over.get(k)
            if done is not None:
                v = [max(0, v[j] - done[j]) for j in range(6)] + [v[6]]
            if any(v[:6]):
                out[k] = tuple(v)
            elif k in self._in_table:
                self._emptied.append(k)  # only what was evicted already: its entry can go
        return out

    def _summed(self, fd: int, key: Any) -> Optional[list[int]]:
        """One per-CPU flow_val, its six counts summed over the CPUs; None if absent."""
        raw = ctypes.create_string_buffer(FLOW_VAL_SIZE * self.dp.ncpus)
        if not libbpf.map_lookup(fd, key, raw):
            return None
        out = [0] * 6
        for cpu in range(self.dp.ncpus):
            for j, x in enumerate(_VAL.unpack_from(raw.raw, cpu * FLOW_VAL_SIZE)[:6]):
                out[j] += x
        return out

    def overflow(self, slot: int) -> Counts:
        return Counts(*(self._summed(self.dp.map_fd("flow_overflow"), ctypes.c_uint32(slot)) or [0] * 6))

    # -- upkeep --------------------------------------------------------------
    def tick(self, now: Optional[float] = None) -> bool:
        """Rates since the last tick, then eviction (idle flows; the stalest
        when the table is nearly full). True if the table was found full."""
        now = time.monotonic() if now is None else now
        with self.lock:
            entries = self._read()
            dt = now - self.last_t if self.last_t is not None else 0.0
            seen: dict[bytes, tuple[int, int, int, float, float, float]] = {}
            for k, v in entries.items():
                ir, is_, pk = v[0], v[1], v[4] + v[5]
                before = self.seen.get(k)
                b_ir, b_is = (before[0], before[1]) if before is not None else (0, 0)  # new: all since the last tick
                rr = max(0, ir - b_ir) / dt if dt > 0 else 0.0
                rs = max(0, is_ - b_is) / dt if dt > 0 else 0.0
                changed = before[3] if before is not None and before[2] == pk else now
                seen[k] = (ir, is_, pk, changed, rr, rs)
            self.seen, self.last_t = seen, now
            stale = [k for k, v in seen.items() if now - v[3] >= self.idle_s and self.owns(_slot_of(k))]
            in_table = len(self._in_table)
            if in_table - len(stale) > HIGH_WATER * self.capacity:
                gone = set(stale)
                keep = sorted((k for k in seen if k not in gone and k in self._in_table and self.owns(_slot_of(k))),
                              key=lambda k: seen[k][3])
                stale += keep[:in_table - len(stale) - int(LOW_WATER * self.capacity)]
            out = stale + [k for k in self._emptied if self.owns(_slot_of(k))]
            for k in out:
                self._evict(k)
                entries.pop(k, None)
            self._shared = (time.monotonic(), entries)
            return in_table >= self.capacity

    def _evict(self, key: bytes) -> None:
        """Take a flow out: its table entry deleted (read once more first),
        what it counted added to ``evicted``. What stays in a cache line is
        remembered as handed over already (``handed_over``), so that it is not
        counted again when the line moves it to the table. Lock held."""
        buf = ctypes.create_string_buffer(key, FLOW_KEY_SIZE)
        table = self._summed(self.fd, buf)
        if table is None or not libbpf.map_delete(self.fd, buf):
            table = [0] * 6
        cached = self._cache.get(key, [0] * 7)[:6]
        done = self.handed_over.get(key, [0] * 6)
        handed = [max(0, table[j] + cached[j] - done[j]) for j in range(6)]
        slot = _KEY.unpack(key)[0]
        if any(handed):
            self.evicted.setdefault(slot, Counts()).add(Counts(*handed))
            self.evictions[slot] = self.evictions.get(slot, 0) + 1
            self._keep(slot)
        self._hand(key, cached)
        self.seen.pop(key, None)

    def purge(self, slot: int) -> None:
        """A slot handed to another interface starts with no flows, no
        evicted totals and no overflow (what its cache lines still hold is
        remembered as gone)."""
        with self.lock:
            self._read()
            for k in set(self._in_table) | set(self._cache):
                if _KEY.unpack(k)[0] != slot:
                    continue
                if k in self._in_table:
                    libbpf.map_delete(self.fd, ctypes.create_string_buffer(k, FLOW_KEY_SIZE))
                self._hand(k, self._cache.get(k, [0] * 7)[:6])
                self.seen.pop(k, None)
            self.evicted.pop(slot, None)
            self.evictions.pop(slot, None)
            self._shared = None
            self._keep(slot)
            zero = ctypes.create_string_buffer(FLOW_VAL_SIZE * self.dp.ncpus)
            libbpf.map_update(self.dp.map_fd("flow_overflow"), ctypes.c_uint32(slot), zero)

    # -- reports ---------------------------------------------------------------
    def report(self, slots: Iterable[int], top: int = DEFAULT_TOP, max_age: float = 0.0) -> dict[int, SlotFlows]:
        """Per slot, read now: counts exact as of this call, rates from the
        last tick; only the ``top`` flows (by rate, then bytes) are decoded.
        With ``max_age``, the last tick's read if it is at most that old (a
        scrape then costs no read of the table: `serve`); each report says
        how old its read is (``age_s``)."""
        wanted = set(slots)
        with self.lock:
            now = time.monotonic()
            if max_age > 0 and self._shared is not None and now - self._shared[0] <= max_age:
                age, entries = now - self._shared[0], self._shared[1]
            else:
                age, entries = 0.0, self._read()
            by_slot: dict[int, list[tuple[float, int, bytes]]] = {s: [] for s in wanted}
            totals: dict[int, list[int]] = {s: [0] * 6 for s in wanted}
            for k, v in entries.items():
                slot = int.from_bytes(k[:4], "little")
                if slot not in wanted:
                    continue
                t = totals[slot]
                for j in range(6):
                    t[j] += v[j]
                st = self.seen.get(k)
                by_slot[slot].append((st[4] + st[5] if st else 0.0, v[0] + v[1], k))
            out = {}
            for slot, ranked in by_slot.items():
                flows = []
                for _, _, k in heapq.nlargest(top, ranked):
                    v = entries[k]
                    f = decode(k, Counts(*v[:6]))
                    if v[6] == FLOW_LOCAL_B:  # endpoint b is this side
                        f.local, f.remote = f.remote, f.local
                    st = self.seen.get(k)
                    f.rate_recv, f.rate_send = (st[4], st[5]) if st else (0.0, 0.0)
                    flows.append(f)
                out[slot] = SlotFlows(len(ranked), flows, Counts(*totals[slot]), _copy(self.evicted.get(slot)),
                                      self.overflow(slot), self.evictions.get(slot, 0), self.capacity,
                                      len(self._in_table), age)
            return out


def _slot_of(key: bytes) -> int:
    return int.from_bytes(key[:4], "little")


def _copy(c: Optional[Counts]) -> Counts:
    out = Counts()
    if c is not None:
        out.add(c)
    return out
