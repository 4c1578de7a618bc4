"""BPF_PROG_TEST_RUN harness: run one frame through one program, read the deltas."""

from __future__ import annotations

import errno
from collections import Counter

from tcflow.bpf import libbpf, loader
from tcflow.bpf.abi import IFACE_F_INCLUDE_LOCAL
from tcflow.bpf.reader import read_slots
from tcflow.engine.slots import SlotTable
from tcflow.model.classes import NAMES
from tcflow.model.errors import TcflowError
from tcflow.system import netns
from tests.support.reference import classify

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
    def __init__(self, dp: loader.Datapath, slots: SlotTable):
        self.dp, self.slots = dp, slots
        self.cookie = netns.cookie_of_current()
        self.slot = slots.alloc()
        self.set_flags(0)

    def set_flags(self, flags: int) -> None:
        self.slots.bind(self.cookie, LOOPBACK_IFINDEX, self.slot, flags)

    def read(self) -> tuple[Counter, Counter]:
        b, p = read_slots(self.dp.map_fd("counters"), self.slot + 1, self.dp.ncpus)[self.slot]
        return (Counter({n: v for n, v in zip(NAMES, b, strict=True) if v}),
                Counter({n: v for n, v in zip(NAMES, p, strict=True) if v}))

    def run(self, program: str, frame: bytes, *, segs: int = 1, include_local: bool = False) -> tuple[Counter, Counter]:
        """Counters that one run of ``program`` on ``frame`` adds, and check it only observes."""
        name, _ = PROGRAMS[program]
        self.set_flags(IFACE_F_INCLUDE_LOCAL if include_local else 0)  # and zeroes the slot
        ctx = None
        if program != "xdp" and segs > 1:
            ctx = libbpf.SkBuff(gso_segs=segs, gso_size=1448)
        try:
            retval, _ = libbpf.test_run(self.dp.prog(name, self.cookie), frame, ctx=ctx)
        except TcflowError as e:
            # For skb programs the kernel refuses a frame whose IPv4/IPv6
            # header is cut short (EINVAL) before our program runs.
            if e.fields.get("errno") == errno.EINVAL and program != "xdp":
                raise Refused(frame.hex()) from None
            raise
        assert retval == (XDP_PASS if program == "xdp" else TC_ACT_UNSPEC)
        return self.read()

    def close(self) -> None:
        self.slots.unbind(self.cookie, LOOPBACK_IFINDEX)
        self.slots.free(self.slot)


def expected(frame: bytes, direction: str, **kw: object) -> tuple[Counter, Counter]:
    b, p = classify(frame, direction, **kw)  # type: ignore[arg-type]
    return +b, +p
