"""Counter slots: which slot of the counters map each interface counts into.

The programs look up ``ifaces`` ({netns cookie, ifindex} -> {slot, flags})
and add to ``counters[slot]``. A SlotTable hands out free slots, zeroes a
slot before its key goes in (a slot freed by one interface must not hand its
counts to the next), and, with --pin, keeps the ``meta`` map that describes
each slot for `tcflow show/status/detach`. One table per Datapath; its own
lock, no module state.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
from typing import Iterator, Optional

from . import _libbpf
from .errors import LimitError
from .loader import Datapath
from .pins import Meta

IFACE_F_INCLUDE_LOCAL = 1


class SlotTable:
    def __init__(self, dp: Datapath):
        self.dp = dp
        self.size = dp.options.max_ifaces
        self._lock = threading.Lock()
        self._held: set[int] = set()             # slots this process handed out
        self._taken: Optional[set[int]] = None   # slots in the map, read once per batch

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
                taken = self._taken = {v.slot for v in self.dp.ifaces.values()}
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

    def bind(self, cookie: int, ifindex: int, slot: int, flags: int) -> None:
        """Zero ``slot``, then point the interface at it: counting starts."""
        self.dp.counters[ctypes.c_uint32(slot)] = self.dp.counters.Leaf()
        self.dp.ifaces[self.dp.ifaces.Key(cookie, ifindex, 0)] = self.dp.ifaces.Leaf(slot, flags)

    def unbind(self, cookie: int, ifindex: int) -> None:
        """Counting of that interface stops (its programs find no slot)."""
        try:
            del self.dp.ifaces[self.dp.ifaces.Key(cookie, ifindex, 0)]
        except KeyError:
            pass

    def lookup(self, cookie: int, ifindex: int) -> Optional[tuple[int, int]]:
        """(slot, flags) of an interface in the map, or None."""
        v = self.dp.ifaces.get(self.dp.ifaces.Key(cookie, ifindex, 0))
        return None if v is None else (int(v.slot), int(v.flags))

    def in_use(self) -> int:
        with self._lock:
            return len(self._held)

    # -- pinned descriptions ------------------------------------------------
    def write_meta(self, slot: int, meta: Meta) -> None:
        _libbpf.map_update(self.dp.map_fd("meta"), ctypes.c_uint32(slot), meta)

    def read_meta(self, slot: int) -> Meta:
        m = Meta()
        _libbpf.map_lookup(self.dp.map_fd("meta"), ctypes.c_uint32(slot), m)
        return m

    def clear_meta(self, slot: int) -> None:
        self.write_meta(slot, Meta())
