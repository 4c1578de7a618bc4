"""The flow table's upkeep and the carried totals, behind fake maps: no root,
no kernel. A FakeKernel plays the datapath's part (per-CPU table entries,
per-CPU cache lines, the overflow cells) with the layouts of bpf/abi.py, and
the tests check the rule SPEC gives: flows + evicted + overflow = what the
datapath counted, whatever is evicted, flushed or purged in between."""

from __future__ import annotations

import ctypes
import json
import struct
from dataclasses import dataclass, field
from typing import Any

import pytest

from tcflow.bpf import abi
from tcflow.bpf.loader import Options
from tcflow.containers.discovery import Discovery
from tcflow.engine import carried as carried_module
from tcflow.engine import flows as flows_module
from tcflow.engine.carried import CarriedTotals
from tcflow.engine.flows import FlowTable
from tcflow.model.classes import NUM_CLASSES

NCPUS = 2
SETS = 4  # of the fake flow cache (abi.FLOW_CACHE_WAYS lines each)
FDS = {"flows": 10, "flow_cache": 11, "flow_overflow": 12}
KEY = abi.packer(abi.FlowKey)
VAL = abi.packer(abi.FlowVal)
LINE = abi.packer(abi.FlowLine, whole=("key",))


def flow_key(slot: int, sport: int, dport: int = 80) -> bytes:
    a = bytes([198, 18, 0, 1]) + bytes(12)
    b = bytes([198, 18, 0, 2]) + bytes(12)
    return KEY.pack(slot, 17, 0, 0, sport.to_bytes(2, "big"), dport.to_bytes(2, "big"), a, b)


@dataclass
class FakeKernel:
    """What the programs would have written, per CPU: [ip recv, ip send,
    payload recv, payload send, packets recv, packets send]."""

    table: dict[bytes, list[list[int]]] = field(default_factory=dict)
    lines: dict[int, tuple[bytes, list[list[int]]]] = field(default_factory=dict)  # line -> (key, per CPU)
    overflow: dict[int, list[list[int]]] = field(default_factory=dict)
    counted: dict[bytes, list[int]] = field(default_factory=dict)  # everything the datapath ever counted

    def packet(self, key: bytes, cpu: int, where: str, counts: list[int], line: int = 0) -> None:
        """One packet's counts, into the table or a cache line (a line holding
        another flow is flushed into the table first, as flow_flush() does)."""
        self.counted[key] = [x + y for x, y in zip(self.counted.get(key, [0] * 6), counts, strict=True)]
        if where == "table":
            cells = self.table.setdefault(key, [[0] * 6 for _ in range(NCPUS)])
        else:
            held = self.lines.get(line)
            if held is not None and held[0] != key:
                self.flush(line)
                held = None
            if held is None:
                held = self.lines[line] = (key, [[0] * 6 for _ in range(NCPUS)])
            cells = held[1]
        cells[cpu] = [x + y for x, y in zip(cells[cpu], counts, strict=True)]

    def flush(self, line: int) -> None:
        key, cells = self.lines.pop(line)
        into = self.table.setdefault(key, [[0] * 6 for _ in range(NCPUS)])
        for cpu in range(NCPUS):
            into[cpu] = [x + y for x, y in zip(into[cpu], cells[cpu], strict=True)]

    # -- the libbpf calls flows.py makes ----------------------------------------
    def lookup_batch(self, fd: int, ksize: int, vsize: int, most: int,
                     into: Any = None) -> tuple[bytes, bytes, int]:
        if fd == FDS["flows"]:
            keys = list(self.table)[:most]
            vals = b"".join(VAL.pack(*c, 1, 0) for k in keys for c in self.table[k])
            return b"".join(keys), vals, len(keys)
        assert fd == FDS["flow_cache"]
        out = b""
        for s in range(SETS):  # each set, each CPU: the tags, then the lines
            for cpu in range(NCPUS):
                held = [self.lines.get(s * abi.FLOW_CACHE_WAYS + w) for w in range(abi.FLOW_CACHE_WAYS)]
                out += b"".join(struct.pack("<I", 0 if h is None else 0x9E3779B1 | 1) for h in held)
                for h in held:
                    key, cells = h if h is not None else (bytes(abi.FLOW_KEY_SIZE), [[0] * 6] * NCPUS)
                    out += LINE.pack(key, 0 if h is None else 1, *cells[cpu], 1, 0)
        assert len(out) == SETS * NCPUS * abi.FLOW_SET_SIZE  # an entry a set of one CPU (the order does not matter)
        return struct.pack(f"<{SETS * NCPUS}I", *range(SETS * NCPUS)), out, SETS * NCPUS

    def lookup_batches(self, fd: int, ksize: int, vsize: int, chunk: int, into: Any) -> Any:
        """As libbpf.lookup_batches: the same entries, ``chunk`` (made small here) at a time."""
        keys, vals, n = self.lookup_batch(fd, ksize, vsize, 1 << 20)
        chunk = 3
        for at in range(0, n, chunk):
            m = min(chunk, n - at)
            yield keys[at * ksize:(at + m) * ksize], vals[at * vsize:(at + m) * vsize], m

    def map_lookup(self, fd: int, key: Any, buf: Any) -> bool:
        cells = self.table.get(bytes(key)) if fd == FDS["flows"] else self.overflow.get(key.value)
        if cells is None:
            return False
        ctypes.memmove(buf, b"".join(VAL.pack(*c, 0, 0) for c in cells), abi.FLOW_VAL_SIZE * NCPUS)
        return True

    def map_delete(self, fd: int, key: Any) -> bool:
        return self.table.pop(bytes(key), None) is not None

    def map_update(self, fd: int, key: Any, value: Any) -> None:
        assert fd == FDS["flow_overflow"]
        self.overflow.pop(key.value, None)


class FakeDatapath:
    def __init__(self, entries: int):
        self.options = Options(flows=True, flow_entries=entries)
        self.ncpus = NCPUS
        self.flow_cache_sets = SETS

    def map_fd(self, name: str) -> int:
        return FDS[name]

    def map_names(self) -> set[str]:
        return set(FDS)  # not pinned: no flow_evicted


@pytest.fixture
def kernel(monkeypatch: pytest.MonkeyPatch) -> FakeKernel:
    k = FakeKernel()
    for name in ("lookup_batch", "lookup_batches", "map_lookup", "map_delete", "map_update"):
        monkeypatch.setattr(flows_module.libbpf, name, getattr(k, name))
    return k


def whole(table: FlowTable, slot: int) -> list[int]:
    """flows + evicted + overflow of one slot, as a report gives them."""
    r = table.report([slot])[slot]
    parts = (r.flows, r.evicted, r.overflow)
    return [sum(getattr(p, n) for p in parts) for n in
            ("ip_recv", "ip_send", "payload_recv", "payload_send", "packets_recv", "packets_send")]


def counted(kernel: FakeKernel, slot: int) -> list[int]:
    out = [0] * 6
    for k, v in kernel.counted.items():
        if KEY.unpack(k)[0] == slot:
            out = [x + y for x, y in zip(out, v, strict=True)]
    return out


def test_an_idle_flow_is_evicted_and_its_bytes_stay_counted(kernel: FakeKernel) -> None:
    t = FlowTable(FakeDatapath(64), idle_s=30)  # type: ignore[arg-type]
    busy, idle = flow_key(3, 1000), flow_key(3, 1001)
    kernel.packet(idle, 0, "table", [128, 0, 100, 0, 1, 0])
    kernel.packet(busy, 1, "table", [0, 228, 0, 200, 0, 1])
    t.tick(now=0.0)
    kernel.packet(busy, 0, "table", [0, 228, 0, 200, 0, 1])
    t.tick(now=20.0)
    assert t.report([3])[3].active == 2
    kernel.packet(busy, 1, "table", [0, 228, 0, 200, 0, 1])
    t.tick(now=31.0)  # idle has not moved for 31 s, busy moved 11 s ago
    r = t.report([3])[3]
    assert r.active == 1 and r.evictions == 1 and idle not in kernel.table
    assert (r.evicted.ip_recv, r.evicted.payload_recv, r.evicted.packets_recv) == (128, 100, 1)
    assert whole(t, 3) == counted(kernel, 3) == [128, 684, 100, 600, 1, 3]


def test_a_flow_evicted_from_the_table_with_part_in_a_cache_line_never_counts_twice(kernel: FakeKernel) -> None:
    t = FlowTable(FakeDatapath(64), idle_s=5)  # type: ignore[arg-type]
    k = flow_key(1, 2000)
    kernel.packet(k, 0, "table", [1000, 0, 972, 0, 1, 0])
    kernel.packet(k, 1, "line", [500, 0, 472, 0, 1, 0], line=7)
    t.tick(now=0.0)
    t.tick(now=6.0)  # idle: the table entry goes, the line's part is handed over
    assert k not in kernel.table and t.handed_over[k] == [500, 0, 472, 0, 1, 0]
    assert whole(t, 1) == counted(kernel, 1)
    kernel.packet(flow_key(1, 2001), 1, "line", [60, 0, 32, 0, 1, 0], line=7)  # takes the line: k flushed
    assert k in kernel.table  # the datapath moved the line's old counts into the table
    assert whole(t, 1) == counted(kernel, 1) == [1560, 0, 1476, 0, 3, 0]
    t.tick(now=7.0)  # what came back holds only what was handed over: its entry goes, nothing is added
    assert k not in kernel.table and whole(t, 1) == counted(kernel, 1)


def test_a_nearly_full_table_loses_its_stalest_flows_down_to_the_low_water_mark(kernel: FakeKernel) -> None:
    t = FlowTable(FakeDatapath(20), idle_s=300)  # type: ignore[arg-type]
    keys = [flow_key(2, 3000 + i) for i in range(19)]  # 19 of 20: over 90 %
    for i, k in enumerate(keys):
        kernel.packet(k, i % NCPUS, "table", [100, 0, 72, 0, 1, 0])
        t.tick(now=float(i))  # flow i last moved at second i
    assert len(kernel.table) == int(flows_module.LOW_WATER * 20)  # 16: the three stalest went
    assert all(k not in kernel.table for k in keys[:3]) and all(k in kernel.table for k in keys[3:])
    assert t.report([2])[2].evictions == 3
    assert whole(t, 2) == counted(kernel, 2)


def test_a_purged_slot_starts_empty(kernel: FakeKernel) -> None:
    t = FlowTable(FakeDatapath(64), idle_s=30)  # type: ignore[arg-type]
    kernel.packet(flow_key(4, 1), 0, "table", [100, 0, 72, 0, 1, 0])
    kernel.packet(flow_key(4, 2), 0, "line", [100, 0, 72, 0, 1, 0], line=3)
    kernel.packet(flow_key(5, 1), 0, "table", [100, 0, 72, 0, 1, 0])
    kernel.overflow[4] = [[7, 0, 0, 0, 1, 0], [0] * 6]
    t.purge(4)
    r = t.report([4, 5])
    assert r[4].active == 0 and whole(t, 4) == [0] * 6 and 4 not in kernel.overflow
    assert r[5].active == 1 and whole(t, 5) == counted(kernel, 5)


def sums(n: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    return (n,) * NUM_CLASSES, (1,) * NUM_CLASSES


def test_carried_totals_add_up_across_lives_and_drop_the_oldest_past_the_limit() -> None:
    c = CarriedTotals(limit=2)
    c.add(("web", "eth0"), sums(10))
    c.add(("web", "eth0"), sums(5))
    assert c.plus(("web", "eth0"), sums(1)) == ((16,) * NUM_CLASSES, (3,) * NUM_CLASSES)
    assert c.plus(("db", "eth0"), sums(1)) == sums(1)  # nothing carried: the live counts as they are
    c.add(("db", "eth0"), sums(1))
    c.add(("cache", "eth0"), sums(1))  # a third: the oldest (web) goes
    assert set(c.totals) == {("db", "eth0"), ("cache", "eth0")}


def test_carried_totals_survive_a_restart_and_refuse_a_torn_or_foreign_file(tmp_path: Any,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(carried_module.journal, "RUN_DIR", str(tmp_path / "run"))
    c = CarriedTotals(pin_dir="/sys/fs/bpf/tcflow-test")
    c.add(("web", "eth0"), sums(7))
    again = CarriedTotals(pin_dir="/sys/fs/bpf/tcflow-test")
    assert again.totals == {("web", "eth0"): sums(7)}
    assert CarriedTotals(pin_dir="/sys/fs/bpf/other").totals == {}  # per pin directory
    path = carried_module.carried_path("/sys/fs/bpf/tcflow-test")
    with open(path, "w") as f:
        f.write('[["web", "eth0", [1, 2], [3]]')  # torn
    assert CarriedTotals(pin_dir="/sys/fs/bpf/tcflow-test").totals == {}
    with open(path, "w") as f:
        f.write('[["web", "eth0", [1], [1]]]')  # another layout
    assert CarriedTotals(pin_dir="/sys/fs/bpf/tcflow-test").totals == {}
    import os
    os.chmod(os.path.dirname(path), 0o777)  # another user could have written it
    c.add(("web", "eth0"), sums(1))
    assert CarriedTotals(pin_dir="/sys/fs/bpf/tcflow-test").totals == {}


def test_the_flow_cache_is_sized_to_its_memory_budget_over_the_cpus() -> None:
    sizes = {n: abi.flow_cache_set_bits(n) for n in (1, 2, 4, 8, 64, 1024)}
    assert sizes[2] == sizes[1] == abi.FLOW_CACHE_SET_BITS[1]  # a small machine: the most sets
    assert sizes[1024] == abi.FLOW_CACHE_SET_BITS[0]           # never fewer than the least
    for n, bits in sizes.items():
        total = (1 << bits) * abi.FLOW_SET_SIZE * n
        assert bits == abi.FLOW_CACHE_SET_BITS[0] or total <= abi.FLOW_CACHE_BUDGET, (n, bits)
        assert bits == abi.FLOW_CACHE_SET_BITS[1] or 2 * total > abi.FLOW_CACHE_BUDGET, (n, bits)  # as many as fit
    assert list(sizes.values()) == sorted(sizes.values(), reverse=True)


def shared(t: FlowTable, slot: int, max_age: float) -> tuple[list[int], float]:
    """flows + evicted + overflow of one slot from a report that may reuse the tick's read, and its age."""
    r = t.report([slot], max_age=max_age)[slot]
    parts = (r.flows, r.evicted, r.overflow)
    return [sum(getattr(p, n) for p in parts) for n in
            ("ip_recv", "ip_send", "payload_recv", "payload_send", "packets_recv", "packets_send")], r.age_s


def test_a_report_may_serve_the_ticks_read_of_the_table_and_says_how_old_it_is(
        kernel: FakeKernel, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(flows_module.time, "monotonic", lambda: clock[0])
    t = FlowTable(FakeDatapath(64), idle_s=5)  # type: ignore[arg-type]
    k, idle = flow_key(6, 1), flow_key(6, 2)
    kernel.packet(k, 0, "table", [100, 0, 72, 0, 1, 0])
    kernel.packet(idle, 1, "line", [50, 0, 22, 0, 1, 0], line=5)
    t.tick(now=0.0)
    kernel.packet(k, 0, "table", [100, 0, 72, 0, 1, 0])  # after the tick's read
    clock[0] += 0.75
    got, age = shared(t, 6, max_age=2.0)
    assert got == [150, 0, 94, 0, 2, 0] and age == 0.75       # the tick's read, and how old it is
    assert whole(t, 6) == counted(kernel, 6) == [250, 0, 166, 0, 3, 0]  # without max_age: read now
    assert t.report([6])[6].age_s == 0.0
    clock[0] += 2.0
    got, age = shared(t, 6, max_age=2.0)
    assert got == counted(kernel, 6) and age == 0.0           # older than max_age: read now
    # what a tick evicts leaves its shared read: counted once, in evicted
    kernel.packet(k, 0, "table", [100, 0, 72, 0, 1, 0])
    t.tick(now=6.0)  # idle: unchanged since 0.0
    got, age = shared(t, 6, max_age=2.0)
    assert got == counted(kernel, 6) == [350, 0, 238, 0, 4, 0] and age == 0.0
    assert t.report([6], max_age=2.0)[6].evictions == 1
    t.purge(6)  # a purged slot's old read is never served
    assert shared(t, 6, max_age=2.0)[0] == [0] * 6


def test_carried_totals_of_removed_docker_containers_are_forgotten_at_most_once_a_minute(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(carried_module.journal, "RUN_DIR", str(tmp_path / "run"))
    root = tmp_path / "docker"
    alive, removed, other = "a" * 64, "b" * 64, "c" * 64
    (root / "containers" / alive).mkdir(parents=True)
    disc = Discovery(proc=str(tmp_path), mode="scan")
    disc.docker_roots = {str(root): None}
    c = CarriedTotals(pin_dir="/sys/fs/bpf/tcflow-test")
    c.add((alive, "eth0"), sums(1), "docker")
    c.add((removed, "eth0"), sums(2), "docker")
    c.add((removed, "eth1"), sums(3), "docker")
    c.add((other, "eth0"), sums(4), "containerd")  # no record tcflow reads: kept
    c.add((f"{alive},{removed}", "eth0"), sums(5), "docker")  # a pod: one of its containers is left
    assert c.prune(disc.docker_removed) == 0  # not a minute yet
    assert c.prune(disc.docker_removed, force=True) == 2
    assert set(c.totals) == {(alive, "eth0"), (other, "eth0"), (f"{alive},{removed}", "eth0")}
    again = CarriedTotals(pin_dir="/sys/fs/bpf/tcflow-test")  # what --pin keeps says the runtime too
    assert again.totals == c.totals and again.runtimes == c.runtimes
    (root / "containers" / alive).rmdir()
    assert again.prune(disc.docker_removed, force=True) == 2 and set(again.totals) == {(other, "eth0")}
    disc.docker_roots = {}
    assert not disc.docker_removed([alive])  # no data root known: nothing is said removed
    disc.docker_roots = {str(root): None}
    assert not disc.docker_removed(["../" + alive[3:]])  # not Docker's id: never a path


def test_carried_totals_read_the_layout_before_runtimes(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(carried_module.journal, "RUN_DIR", str(tmp_path / "run"))
    CarriedTotals(pin_dir="/sys/fs/bpf/tcflow-test").add(("web", "eth0"), sums(7))
    path = carried_module.carried_path("/sys/fs/bpf/tcflow-test")
    with open(path) as f:
        doc = json.load(f)
    with open(path, "w") as f:
        json.dump([entry[:4] for entry in doc], f)  # as the previous version wrote it
    again = CarriedTotals(pin_dir="/sys/fs/bpf/tcflow-test")
    assert again.totals == {("web", "eth0"): sums(7)} and again.runtimes == {}
