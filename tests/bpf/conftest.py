"""BPF_PROG_TEST_RUN harness: run one frame through one program, read the deltas."""

from __future__ import annotations

import ctypes
import errno
from collections import Counter
from typing import Iterator

import pytest

from tcflow import _libbpf, loader, netns
from tcflow.classes import NAMES
from tcflow.counters import read_slots
from tcflow.errors import TcflowError
from tcflow.monitor import IFACE_F_INCLUDE_LOCAL, _alloc_slot, _free_slot

LOOPBACK_IFINDEX = 1  # test runs without a ctx ifindex run "on" lo
PROGRAMS = {
    "xdp": (loader.PROG_XDP, "recv"),
    "tc_ingress": (loader.PROG_TC_INGRESS, "recv"),
    "tc_egress": (loader.PROG_TC_EGRESS, "send"),
}
XDP_PASS = 2
TC_ACT_UNSPEC = 0xFFFFFFFF


class Refused(Exception):
    """The kernel's test-run interface would not take this frame."""


class Harness:
    def __init__(self, dp: loader.Datapath):
        self.dp = dp
        self.cookie = netns.cookie_of_current()
        self.slot = _alloc_slot(dp)
        self.key = dp.ifaces.Key(self.cookie, LOOPBACK_IFINDEX, 0)
        self.set_flags(0)

    def set_flags(self, flags: int) -> None:
        self.dp.ifaces[self.key] = self.dp.ifaces.Leaf(self.slot, flags)

    def read(self) -> tuple[Counter, Counter]:
        b, p = read_slots(self.dp.map_fd("counters"), self.slot + 1, self.dp.counters.total_cpu)[self.slot]
        return (Counter({n: v for n, v in zip(NAMES, b) if v}), Counter({n: v for n, v in zip(NAMES, p) if v}))

    def run(self, program: str, frame: bytes, *, segs: int = 1, include_local: bool = False) -> tuple[Counter, Counter]:
        """Counters that one run of ``program`` on ``frame`` adds, and check it only observes."""
        name, _ = PROGRAMS[program]
        self.set_flags(IFACE_F_INCLUDE_LOCAL if include_local else 0)
        self.dp.counters[ctypes.c_uint32(self.slot)] = self.dp.counters.Leaf()
        ctx = None
        if program != "xdp" and segs > 1:
            ctx = _libbpf.SkBuff(gso_segs=segs, gso_size=1448)
        try:
            retval, _ = _libbpf.test_run(self.dp.prog(name, self.cookie), frame, ctx=ctx)
        except TcflowError as e:
            # For skb programs the kernel refuses a frame whose IPv4/IPv6
            # header is cut short (EINVAL) before our program runs.
            if e.fields.get("errno") == errno.EINVAL and program != "xdp":
                raise Refused(frame.hex()) from None
            raise
        assert retval == (XDP_PASS if program == "xdp" else TC_ACT_UNSPEC)
        return self.read()

    def close(self) -> None:
        del self.dp.ifaces[self.key]
        _free_slot(self.dp, self.slot)


@pytest.fixture(scope="session")
def datapath() -> loader.Datapath:
    return loader.datapath()


@pytest.fixture
def harness(datapath: loader.Datapath) -> Iterator[Harness]:
    h = Harness(datapath)
    try:
        yield h
    finally:
        h.close()


def expected(frame: bytes, direction: str, **kw: object) -> tuple[Counter, Counter]:
    from tests.traffic_gen.reference import classify

    b, p = classify(frame, direction, **kw)  # type: ignore[arg-type]
    return +b, +p
