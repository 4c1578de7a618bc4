"""The ABI, checked against what bcc compiled: every struct that abi.h
declares has the size, field offsets and field sizes that abi.py gives it,
and every constant the same value.

The structs come from the maps of the real program (bcc builds each map's
key and value type from the compiled C); the constants from a probe that
includes abi.h and turns each into the length of a char array."""

from __future__ import annotations

import ctypes
import os
from typing import Any

import pytest

from tcflow.bpf import abi, build, kheaders, libbpf
from tcflow.model import classes

bcc = pytest.importorskip("bcc")

# map name -> (key type, value type) as abi.py declares them; None: a u32 index
MAPS: dict[str, tuple[Any, Any]] = {
    "ifaces": (abi.IfaceKey, abi.IfaceVal),
    "by_ifindex": (None, abi.IfaceVal),
    "counters": (None, abi.Counters),
    "flows": (abi.FlowKey, abi.FlowVal),
    "flow_frags": (abi.FragKey, abi.FragVal),
    "flow_overflow": (None, abi.FlowVal),
    "flow_cache": (None, abi.FlowSet),
}
CONSTANTS = {
    "DIR_RECV": abi.DIR_RECV, "DIR_SEND": abi.DIR_SEND, "IFACE_F_INCLUDE_LOCAL": abi.IFACE_F_INCLUDE_LOCAL,
    "FLOW_LOCAL_A": abi.FLOW_LOCAL_A, "FLOW_LOCAL_B": abi.FLOW_LOCAL_B, "FLOW_CACHE_WAYS": abi.FLOW_CACHE_WAYS,
    "FLOW_CACHE_SET_BITS": abi.flow_cache_set_bits(libbpf.num_possible_cpus()),  # as build.cflags() passes it
    # a bit flag, as its bit's index (an array 2**31 long would not do)
    "__builtin_ctz(IFACE_F_BOUND)": abi.IFACE_F_BOUND.bit_length() - 1,
}


def layout(t: Any, prefix: str = "") -> list[tuple[str, int, int]]:
    """(name, offset, size) of every field, nested structs and arrays of them unrolled."""
    if not (isinstance(t, type) and issubclass(t, ctypes.Structure)):
        return []
    out = []
    for name, ft in t._fields_:
        off = getattr(t, name).offset
        out.append((prefix + name, off, ctypes.sizeof(ft)))
        inner = ft._type_ if issubclass(ft, ctypes.Array) else ft
        n = ft._length_ if issubclass(ft, ctypes.Array) else 1
        for i in range(n):
            out += [(n, off + i * ctypes.sizeof(inner) + o, s)
                    for n, o, s in layout(inner, f"{prefix}{name}[{i}].")]
    return out


def value_type(table: Any) -> Any:
    """One entry's value: bcc's Leaf of a per-CPU map holds every CPU's (sLeaf is one)."""
    return getattr(table, "sLeaf", table.Leaf)


@pytest.fixture(scope="module", autouse=True)
def headers() -> Any:
    """The kernel headers tcflow's own build uses (tcflow/bpf/kheaders.py)."""
    saved = os.environ.get("BCC_KERNEL_SOURCE")
    os.environ["BCC_KERNEL_SOURCE"] = kheaders.locate().path
    yield
    if saved is None:
        del os.environ["BCC_KERNEL_SOURCE"]
    else:
        os.environ["BCC_KERNEL_SOURCE"] = saved


@pytest.fixture(scope="module")
def compiled() -> Any:
    b = bcc.BPF(text=build.source_text().encode(), cflags=build.cflags(flows=True))
    yield b
    b.cleanup()


@pytest.mark.parametrize("name", sorted(MAPS))
def test_each_map_type_matches_abi_py(compiled: Any, name: str) -> None:
    table = compiled[name.encode()]
    want_key, want_val = MAPS[name]
    for got, want in ((table.Key, want_key or ctypes.c_uint32), (value_type(table), want_val)):
        assert ctypes.sizeof(got) == ctypes.sizeof(want), (name, want)
        assert layout(got) == layout(want), (name, want)


def test_the_counters_cell_per_class_comes_from_the_classes(compiled: Any) -> None:
    assert ctypes.sizeof(value_type(compiled[b"counters"])) == abi.COUNTERS_SIZE == 16 * classes.NUM_CLASSES


def test_every_constant_has_the_same_value_on_both_sides() -> None:
    fields = "".join(f"char c{i}[({expr}) + 1];\n" for i, expr in enumerate(CONSTANTS))
    probe = (f'#include "{os.path.join(build.HERE, "abi.h")}"\n'
             f"struct abi_constants {{ {fields} }};\n"
             "BPF_ARRAY(abi_constants, struct abi_constants, 1);\n")
    b = bcc.BPF(text=probe.encode(), cflags=build.cflags(flows=True))
    try:
        leaf = b[b"abi_constants"].Leaf
        got = {expr: getattr(leaf, f"c{i}").size - 1 for i, expr in enumerate(CONSTANTS)}
    finally:
        b.cleanup()
    assert got == CONSTANTS
    assert abi.IFACE_F_BOUND == 1 << got["__builtin_ctz(IFACE_F_BOUND)"]


def test_the_map_layouts_the_pins_check_are_the_compiled_ones(compiled: Any) -> None:
    for name, (_kname, _mtype, ksize, vsize) in abi.MAP_LAYOUT.items():
        if name == "meta":
            continue  # user space only: no program has it
        table = compiled[name.encode()]
        assert (ctypes.sizeof(table.Key), ctypes.sizeof(value_type(table))) == (ksize, vsize), name
