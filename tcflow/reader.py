"""Read the per-CPU counters map: one batch syscall, summed across CPUs.

The kernel side adds to per-CPU counters without atomics; user space sums
them. ``struct counters`` in the C is one {u64 bytes, u64 packets} cell per
class, per slot, per CPU, in the order of ``classes.CELL`` (not the class
index: see there why).
"""

from __future__ import annotations

from . import _libbpf
from .classes import CELL, CLASSES, NUM_CLASSES

WORDS_PER_SLOT = 2 * NUM_CLASSES
VALUE_SIZE = 8 * WORDS_PER_SLOT
U64 = 0xFFFFFFFFFFFFFFFF
_BYTES_AT = [2 * CELL[c.name] for c in CLASSES]  # word of each class's bytes; its packets follow

Sums = tuple[list[int], list[int]]


def sum_percpu(raw: bytes, ncpus: int, nslots: int) -> list[Sums]:
    """Sum a batch-read per-CPU counters buffer.

    ``raw`` holds ``nslots`` entries of ``ncpus`` x VALUE_SIZE bytes each,
    slot-major, as BPF_MAP_LOOKUP_BATCH returns them. Returns, per slot,
    (bytes per class, packets per class). u64 counters wrap at 2**64; the
    sum is taken modulo 2**64 too, as the kernel's own per-CPU sums are.
    """
    words = memoryview(raw).cast("Q")
    out = []
    for s in range(nslots):
        base = s * ncpus * WORDS_PER_SLOT
        rows = [words[base + c * WORDS_PER_SLOT: base + (c + 1) * WORDS_PER_SLOT] for c in range(ncpus)]
        tot = [sum(col) & U64 for col in zip(*rows, strict=True)]
        out.append(([tot[w] for w in _BYTES_AT], [tot[w + 1] for w in _BYTES_AT]))
    return out


def read_slots(map_fd: int, nslots: int, ncpus: int) -> list[Sums]:
    """One batch read of slots [0, nslots) of the counters map, summed."""
    if nslots == 0:
        return []
    _, values, n = _libbpf.lookup_batch(map_fd, 4, VALUE_SIZE * ncpus, nslots)
    return sum_percpu(values[: n * VALUE_SIZE * ncpus], ncpus, n)
