"""Read the per-CPU counters map: one batch syscall, summed across CPUs.

The kernel side adds to per-CPU counters without atomics; user space sums
them. ``struct counters`` in the C is one {u64 bytes, u64 packets} cell per
class, per slot, per CPU, in the order of ``classes.CELL`` (not the class
index: see there why).
"""

from __future__ import annotations

from operator import add

from tcflow.bpf import libbpf
from tcflow.bpf.abi import COUNTERS_SIZE
from tcflow.model.classes import CELL, CLASSES, NUM_CLASSES

WORDS_PER_SLOT = 2 * NUM_CLASSES
VALUE_SIZE = COUNTERS_SIZE
assert VALUE_SIZE == 8 * WORDS_PER_SLOT
U64 = 0xFFFFFFFFFFFFFFFF
_BYTES_AT = [2 * CELL[c.name] for c in CLASSES]  # word of each class's bytes; its packets follow

Sums = tuple[tuple[int, ...], tuple[int, ...]]


def sum_percpu(raw: bytes, ncpus: int, nslots: int) -> list[Sums]:
    """Sum a batch-read per-CPU counters buffer.

    ``raw`` holds ``nslots`` entries of ``ncpus`` x VALUE_SIZE bytes each,
    slot-major, as BPF_MAP_LOOKUP_BATCH returns them. Returns, per slot,
    (bytes per class, packets per class). u64 counters wrap at 2**64; the
    sum is taken modulo 2**64 too, as the kernel's own per-CPU sums are.
    Every loop over words runs in C (slices with a step, map, zip): 1000
    slots take a few ms, not tens.
    """
    stride = ncpus * WORDS_PER_SLOT
    words = memoryview(raw).cast("Q")[: nslots * stride].tolist()
    cols = []  # cols[i]: word i of every slot, summed over the CPUs
    for i in range(WORDS_PER_SLOT):
        col = words[i::stride]
        for c in range(1, ncpus):
            col = list(map(add, col, words[c * WORDS_PER_SLOT + i::stride]))
        if col and max(col) > U64:
            col = [x & U64 for x in col]
        cols.append(col)
    by_bytes = zip(*(cols[i] for i in _BYTES_AT), strict=True)
    by_packets = zip(*(cols[i + 1] for i in _BYTES_AT), strict=True)
    return list(zip(by_bytes, by_packets, strict=True))


def read_slots(map_fd: int, nslots: int, ncpus: int) -> list[Sums]:
    """One batch read of slots [0, nslots) of the counters map, summed."""
    if nslots == 0:
        return []
    _, values, n = libbpf.lookup_batch(map_fd, 4, VALUE_SIZE * ncpus, nslots)
    return sum_percpu(values[: n * VALUE_SIZE * ncpus], ncpus, n)
