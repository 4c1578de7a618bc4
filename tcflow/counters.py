"""Per-CPU sums -> Snapshot; deltas and rates.

The kernel side adds to per-CPU counters without atomics; here they are read
in one batch (one syscall for all slots) and summed across CPUs. Nothing here
imports bcc or pyroute2: exporters can take a Snapshot as plain data.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Optional

from .classes import NAMES, NUM_CLASSES

# struct counters in xdp_tc.c: u64 bytes[NUM_CLASSES]; u64 packets[NUM_CLASSES]
WORDS_PER_SLOT = 2 * NUM_CLASSES
VALUE_SIZE = 8 * WORDS_PER_SLOT


def sum_percpu(raw: bytes, ncpus: int, nslots: int) -> list[tuple[list[int], list[int]]]:
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
        tot = [sum(col) & 0xFFFFFFFFFFFFFFFF for col in zip(*rows)]
        out.append((tot[:NUM_CLASSES], tot[NUM_CLASSES:]))
    return out


@dataclass(frozen=True)
class InterfaceCounters:
    """Counters of one attached interface, cumulative since it was attached.

    ``bytes`` and ``packets`` map every class name (tcflow.classes.NAMES) to
    an int. Caveats: L4 classes are payload bytes; L3 classes are IP bytes,
    with GSO aggregates expanded to the packets they stand for; ``hooks``
    says where recv was counted ({"ingress": "xdp"|"tc", "xdp_mode": ...,
    "egress": "tc"}).
    """

    ifname: str
    netns: str
    ifindex: int
    hooks: Mapping[str, Optional[str]]
    bytes: Mapping[str, int]
    packets: Mapping[str, int]

    @property
    def key(self) -> str:
        return f"{self.netns}/{self.ifname}" if self.netns else self.ifname


@dataclass(frozen=True)
class Snapshot:
    """All attached interfaces at one instant.

    ``time`` is wall-clock (seconds since the epoch), ``monotonic`` is for
    rates. ``interfaces`` is keyed by ``netns/ifname`` (just ``ifname`` for the
    namespace tcflow runs in).
    """

    time: float
    monotonic: float
    interfaces: Mapping[str, InterfaceCounters] = field(default_factory=dict)

    def rates(self, earlier: "Snapshot") -> dict[str, dict[str, float]]:
        """Bytes per second per class since ``earlier``, per interface.

        Interfaces missing from ``earlier`` (attached since) are left out.
        A counter that went backwards (a re-attach reset it) gives 0.
        """
        dt = self.monotonic - earlier.monotonic
        out: dict[str, dict[str, float]] = {}
        if dt <= 0:
            return out
        for key, now in self.interfaces.items():
            before = earlier.interfaces.get(key)
            if before is None:
                continue
            out[key] = {n: max(0, now.bytes[n] - before.bytes[n]) / dt for n in NAMES}
        return out


def make_snapshot(entries: Iterable[tuple[str, str, int, Mapping[str, Optional[str]], list[int], list[int]]],
                  now: Optional[float] = None, mono: Optional[float] = None) -> Snapshot:
    """Build a Snapshot from (ifname, netns, ifindex, hooks, bytes, packets)."""
    ifs = {}
    for ifname, netns, ifindex, hooks, b, p in entries:
        ic = InterfaceCounters(ifname, netns, ifindex, dict(hooks), dict(zip(NAMES, b)), dict(zip(NAMES, p)))
        ifs[ic.key] = ic
    return Snapshot(time.time() if now is None else now,
                    time.monotonic() if mono is None else mono, ifs)


def read_slots(map_fd: int, nslots: int, ncpus: int) -> list[tuple[list[int], list[int]]]:
    """One batch read of slots [0, nslots) of the counters map, summed."""
    from . import _libbpf

    if nslots == 0:
        return []
    _, values, n = _libbpf.lookup_batch(map_fd, 4, VALUE_SIZE * ncpus, nslots)
    return sum_percpu(values[: n * VALUE_SIZE * ncpus], ncpus, n)
