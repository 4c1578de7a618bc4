"""The datapath's binary interface, Python side: every struct and constant
that tcflow/bpf/abi.h declares for the programs, declared once here.

tests/bpf/test_abi.py compiles the C with bcc and checks each struct's size
and every field's offset and size, and each constant, against this module.
The class cells themselves are not here: tcflow/model/classes.py is their
only list, and passes them to the C as cflags.

Also here, because the loader and the pins both need them: the kernel's map
types tcflow uses (linux/bpf.h) and the layout of every map it pins.
"""

from __future__ import annotations

import ctypes
import struct
from typing import Any

from tcflow.model.classes import NUM_CLASSES

# enum bpf_map_type (linux/bpf.h)
BPF_MAP_TYPE_HASH = 1
BPF_MAP_TYPE_ARRAY = 2
BPF_MAP_TYPE_PERCPU_HASH = 5
BPF_MAP_TYPE_PERCPU_ARRAY = 6
BPF_MAP_TYPE_LRU_HASH = 9
BPF_F_NO_PREALLOC = 1  # map_flags: entries allocated as they come

# abi.h's constants
DIR_RECV, DIR_SEND = 0, 1                   # index of flow_val's [2] arrays
IFACE_F_INCLUDE_LOCAL = 1                   # iface_val.flags: count local traffic in the classes
IFACE_F_BOUND = 0x80000000                  # by_ifindex entry in use
FLOW_LOCAL_A, FLOW_LOCAL_B = 1, 2           # flow_val.local: which endpoint is this interface's side
FLOW_CACHE_WAYS = 4                         # lines a set of the per-CPU flow cache has
FLOW_CACHE_BUDGET = 16 << 20                # bytes the flow cache may take over all CPUs
FLOW_CACHE_SET_BITS = (9, 13)               # ... in 512 to 8,192 sets a CPU


class IfaceKey(ctypes.Structure):
    _fields_ = [("netns_cookie", ctypes.c_uint64), ("ifindex", ctypes.c_uint32), ("pad", ctypes.c_uint32)]


class IfaceVal(ctypes.Structure):
    _fields_ = [("slot", ctypes.c_uint32), ("flags", ctypes.c_uint32)]


class Cell(ctypes.Structure):
    _fields_ = [("bytes", ctypes.c_uint64), ("packets", ctypes.c_uint64)]


class Counters(ctypes.Structure):
    """One slot's cells, one per class (order: model.classes.CELL)."""

    _fields_ = [("c", Cell * NUM_CLASSES)]


class FlowKey(ctypes.Structure):
    """Ports and addresses in network byte order, kept as bytes."""

    _fields_ = [("slot", ctypes.c_uint32), ("proto", ctypes.c_uint8), ("hdr6", ctypes.c_uint8),
                ("pad", ctypes.c_uint16), ("port_a", ctypes.c_uint8 * 2), ("port_b", ctypes.c_uint8 * 2),
                ("addr_a", ctypes.c_uint8 * 16), ("addr_b", ctypes.c_uint8 * 16)]


class FlowVal(ctypes.Structure):
    _fields_ = [("ip_bytes", ctypes.c_uint64 * 2), ("payload", ctypes.c_uint64 * 2),
                ("packets", ctypes.c_uint64 * 2), ("local", ctypes.c_uint32), ("pad", ctypes.c_uint32)]


class FragKey(ctypes.Structure):
    _fields_ = [("id", ctypes.c_uint8 * 4), ("proto", ctypes.c_uint8), ("hdr6", ctypes.c_uint8),
                ("pad", ctypes.c_uint16), ("src", ctypes.c_uint8 * 16), ("dst", ctypes.c_uint8 * 16)]


class FragVal(ctypes.Structure):
    _fields_ = [("sport", ctypes.c_uint8 * 2), ("dport", ctypes.c_uint8 * 2)]


class FlowLine(ctypes.Structure):
    _fields_ = [("key", FlowKey), ("used", ctypes.c_uint32), ("val", FlowVal)]


class FlowSet(ctypes.Structure):
    _fields_ = [("tag", ctypes.c_uint32 * FLOW_CACHE_WAYS), ("line", FlowLine * FLOW_CACHE_WAYS)]


class Meta(ctypes.Structure):
    """The value of the pinned ``meta`` map: what one slot is, for `tcflow
    show/status/detach` after the process that attached it is gone. Written
    and read by user space only; no program touches it (so abi.h has no
    twin of it)."""

    _fields_ = [("netns_cookie", ctypes.c_uint64), ("netns_inode", ctypes.c_uint64),
                ("attached_ns", ctypes.c_uint64), ("ifindex", ctypes.c_uint32), ("pid", ctypes.c_uint32),
                ("in_use", ctypes.c_uint8), ("ingress", ctypes.c_uint8), ("xdp_mode", ctypes.c_uint8),
                ("created_clsact", ctypes.c_uint8), ("flags", ctypes.c_uint32),
                ("ifname", ctypes.c_char * 16), ("netns", ctypes.c_char * 112),
                ("netns_path", ctypes.c_char * 128)]


COUNTERS_SIZE = ctypes.sizeof(Counters)  # one slot's value, one CPU
FLOW_KEY_SIZE = ctypes.sizeof(FlowKey)
FLOW_VAL_SIZE = ctypes.sizeof(FlowVal)
FLOW_LINE_SIZE = ctypes.sizeof(FlowLine)
FLOW_SET_SIZE = ctypes.sizeof(FlowSet)


def flow_cache_set_bits(ncpus: int) -> int:
    """How many sets (as bits) the per-CPU flow cache has: as many as
    FLOW_CACHE_BUDGET holds over ``ncpus`` CPUs, within FLOW_CACHE_SET_BITS
    (13 on 2 to 4 CPUs: 32,768 lines, 3.4 MiB a CPU; 9 on 64). More lines
    spare the table more flows, but every line is memory in every CPU, and
    a packet pays for how far apart the lines it touches are (bench section
    10). A compile-time constant of the image (build.cflags)."""
    lo, hi = FLOW_CACHE_SET_BITS
    fit = FLOW_CACHE_BUDGET // (FLOW_SET_SIZE * max(1, ncpus))
    return max(lo, min(hi, fit.bit_length() - 1))

FRAG_KEY_SIZE = ctypes.sizeof(FragKey)
FRAG_VAL_SIZE = ctypes.sizeof(FragVal)

# What each pinned map of tcflow's is: (kernel's map name, type, key size,
# value size). The counters map's name tells its layout: "counter_cells" is
# one {bytes, packets} cell per class (an older tcflow's "counters" had all
# bytes, then all packets: same size, other meaning, so it is refused).
MAP_LAYOUT = {
    "ifaces": ("ifaces", BPF_MAP_TYPE_HASH, ctypes.sizeof(IfaceKey), ctypes.sizeof(IfaceVal)),
    "counters": ("counter_cells", BPF_MAP_TYPE_PERCPU_ARRAY, 4, COUNTERS_SIZE),
    "meta": ("meta", BPF_MAP_TYPE_ARRAY, 4, ctypes.sizeof(Meta)),
}


class FlowEvicted(ctypes.Structure):
    """The value of the pinned ``flow_evicted`` map (--flows --pin): per slot,
    what user space took out of the flow table (evicted flows) and how many
    times. User space only, like Meta."""

    _fields_ = [("counts", ctypes.c_uint64 * 6), ("evictions", ctypes.c_uint64)]


# --flows --pin: the flow maps pinned beside those (flags: not preallocated
# for the flow table, as loader.py makes it).
FLOW_MAP_LAYOUT = {
    "flows": ("flows", BPF_MAP_TYPE_PERCPU_HASH, FLOW_KEY_SIZE, FLOW_VAL_SIZE),
    "flow_frags": ("flow_frags", BPF_MAP_TYPE_LRU_HASH, FRAG_KEY_SIZE, FRAG_VAL_SIZE),
    "flow_overflow": ("flow_overflow", BPF_MAP_TYPE_PERCPU_ARRAY, 4, FLOW_VAL_SIZE),
    "flow_cache": ("flow_cache", BPF_MAP_TYPE_ARRAY, 4, FLOW_SET_SIZE),
    "flow_evicted": ("flow_evicted", BPF_MAP_TYPE_ARRAY, 4, ctypes.sizeof(FlowEvicted)),
    # per flow key: what was handed to evicted while part of it sat in a cache line
    "flow_handed": ("flow_handed", BPF_MAP_TYPE_HASH, FLOW_KEY_SIZE, 6 * 8),
}

_CODES: dict[Any, str] = {ctypes.c_uint8: "B", ctypes.c_uint16: "H", ctypes.c_uint32: "I", ctypes.c_uint64: "Q"}


def packer(cls: type[ctypes.Structure], whole: tuple[str, ...] = ()) -> struct.Struct:
    """A struct.Struct over ``cls``'s fields in order, for reading many
    entries out of one batch buffer fast: byte arrays (and the nested
    structs named in ``whole``) as one bytes value, other arrays as their
    elements, nested structs flattened. Padding is checked, never guessed."""
    fmt = "<"
    fields: list[tuple[str, Any]] = cls._fields_  # type: ignore[assignment]
    for name, ctype in fields:
        if name in whole or (issubclass(ctype, ctypes.Array) and ctype._type_ is ctypes.c_uint8):
            fmt += f"{ctypes.sizeof(ctype)}s"
        elif issubclass(ctype, ctypes.Array):
            fmt += f"{ctype._length_}{_CODES[ctype._type_]}"
        elif issubclass(ctype, ctypes.Structure):
            fmt += packer(ctype).format[1:]
        else:
            fmt += _CODES[ctype]
        off = getattr(cls, name).offset + ctypes.sizeof(ctype)
        assert struct.calcsize(fmt) == off, f"{cls.__name__}.{name}: padding before it"
    assert struct.calcsize(fmt) == ctypes.sizeof(cls), f"{cls.__name__}: padding at the end"
    return struct.Struct(fmt)
