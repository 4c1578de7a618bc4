"""Counter slots: which slot of the counters map each interface counts into.

The programs find an interface's slot in their namespace's ``by_ifindex``
array (or, past its end, in ``ifaces``: {netns cookie, ifindex} -> {slot,
flags}) and add to ``counters[slot]``. A SlotTable hands out free slots, zeroes a
slot before its key goes in (a slot freed by one interface must not hand its
counts to the next), and, with --pin, keeps the ``meta`` map that describes
each slot for `tcflow show/status/detach`. One table per Datapath; its own
lock, no module state.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
from typing import Callable, Iterator, Optional

from tcflow.bpf import libbpf
from tcflow.bpf.abi import IfaceKey, IfaceVal, Meta
from tcflow.bpf.loader import Datapath
from tcflow.bpf.reader import VALUE_SIZE
from tcflow.model.errors import LimitError


class SlotTable:
    def __init__(self, dp: Datapath):
        self.dp = dp
        self.size = dp.options.max_interfaces
        self._lock = threading.Lock()
        self._held: set[int] = set()             # slots this process handed out
        self._taken: Optional[set[int]] = None   # slots in the map, read once per batch
        self.on_bind: Optional[Callable[[int], None]] = None  # --flows: a slot's flows go before it is reused
        self.on_adopt: Optional[Callable[[int], None]] = None  # --flows --pin: its evicted totals read back

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Allocations inside read the map's slots once, not once each
        (1000 interfaces would walk the map 1000 times). Hold the pin lock
        around it when other processes may allocate too."""
        with self._lock:
            self._taken = None
        try:
            yield
        finally:
            with self._lock:
                self._taken = None

    def alloc(self) -> int:
        with self._lock:
            taken = self._taken
            if taken is None:
                taken = self._taken = {slot for slot, _ in self.dp.interface_entries().values()}
            for s in range(self.size):
                if s not in self._held and s not in taken:
                    self._held.add(s)
                    taken.add(s)
                    return s
        raise LimitError(f"all {self.size} interface slots are in use",
                         hint="detach interfaces, or raise the limit with --max-interfaces")

    def free(self, slot: int) -> None:
        with self._lock:
            self._held.discard(slot)
            if self._taken is not None:
                self._taken.discard(slot)

    def adopt(self, slot: int) -> None:
        """Mark a slot found in the map (a pinned attachment) as this process's."""
        with self._lock:
            self._held.add(slot)
        if self.on_adopt is not None:
            self.on_adopt(slot)

    def holds(self, slot: int) -> bool:
        """True if this process counts ``slot`` (other tcflows may share the pinned maps)."""
        return slot in self._held

    def bind(self, cookie: int, ifindex: int, slot: int, flags: int) -> None:
        """Zero ``slot``, then point the interface at it: counting starts."""
        zero = ctypes.create_string_buffer(VALUE_SIZE * self.dp.ncpus)
        libbpf.map_update(self.dp.map_fd("counters"), ctypes.c_uint32(slot), zero)
        if self.on_bind is not None:
            self.on_bind(slot)
        libbpf.map_update(self.dp.map_fd("ifaces"), IfaceKey(cookie, ifindex, 0), IfaceVal(slot, flags))
        self.dp.index(cookie, ifindex, slot, flags)

    def unbind(self, cookie: int, ifindex: int) -> None:
        """Counting of that interface stops (its programs find no slot)."""
        self.dp.unindex(cookie, ifindex)
        libbpf.map_delete(self.dp.map_fd("ifaces"), IfaceKey(cookie, ifindex, 0))

    def lookup(self, cookie: int, ifindex: int) -> Optional[tuple[int, int]]:
        """(slot, flags) of an interface in the map, or None."""
        v = IfaceVal()
        if not libbpf.map_lookup(self.dp.map_fd("ifaces"), IfaceKey(cookie, ifindex, 0), v):
            return None
        return int(v.slot), int(v.flags)

    def in_use(self) -> int:
        with self._lock:
            return len(self._held)

    # -- pinned descriptions ------------------------------------------------
    def write_meta(self, slot: int, meta: Meta) -> None:
        libbpf.map_update(self.dp.map_fd("meta"), ctypes.c_uint32(slot), meta)

    def read_meta(self, slot: int) -> Meta:
        m = Meta()
        libbpf.map_lookup(self.dp.map_fd("meta"), ctypes.c_uint32(slot), m)
        return m

    def clear_meta(self, slot: int) -> None:
        self.write_meta(slot, Meta())
