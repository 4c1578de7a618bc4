"""Monitor: the library's short form for interfaces in one namespace.

    with tcflow.Monitor(["veth0"], netns="ns1") as m:
        snap = m.snapshot()

A thin facade over Agent (tcflow/agent.py), which serves any number of
namespaces; use that directly for more than one.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

from .agent import Agent
from .binding import INGRESS_CHOICES, XDP_MODES, Settings
from .errors import UsageError
from .links import Link
from .loader import Datapath, Options
from .snapshot import Snapshot
from .targets import Target, Where


class Monitor:
    """Counters for a set of interfaces in one network namespace.

    ``ingress``: "auto" (default: native XDP on a physical NIC whose driver
    has it, clsact ingress on virtual devices such as veths and wherever
    native XDP is refused), "xdp" or "tc". ``xdp_mode`` (with "xdp"): "auto"
    (native, else generic), "native" or "generic". ``include_local`` counts
    loopback and src == dst traffic in the classes instead of only in LOCAL_*.
    ``match``/``follow``: also take interfaces whose name matches a glob, and
    keep doing so as they appear (``sync()``). ``pin``: counters live under
    bpffs and outlive the process. ``datapath``: reuse a compiled Datapath
    (left open on close) instead of compiling.
    """

    def __init__(self, interfaces: Sequence[str] = (), netns: Optional[str] = None, pid: Optional[int] = None,
                 ingress: str = "auto", xdp_mode: str = "auto", include_local: bool = False,
                 options: Optional[Options] = None, match: Sequence[str] = (), follow: bool = False,
                 pin: bool = False, pin_dir: Optional[str] = None, datapath: Optional[Datapath] = None):
        if ingress not in INGRESS_CHOICES:
            raise UsageError(f"unknown ingress hook {ingress}", hint="use auto, xdp or tc")
        if xdp_mode not in XDP_MODES:
            raise UsageError(f"unknown XDP mode {xdp_mode}", hint="use auto, native or generic")
        if not interfaces and not match:
            raise UsageError("no interface given", hint="name at least one, or give --match GLOB")
        if follow and not match:
            raise UsageError("--follow needs --match", hint="e.g. --match 'veth*' --follow")
        options = options or Options()
        if pin_dir:
            options = dataclasses.replace(options, pin_dir=pin_dir)
        self.target = Target(Where(netns, pid), tuple(dict.fromkeys(interfaces)), tuple(match), follow)
        self.agent = Agent(Settings(ingress, xdp_mode, include_local, pin), options, datapath)

    def attach(self) -> "Monitor":
        self.agent.start([self.target])
        return self

    def close(self) -> None:
        self.agent.close()

    def __enter__(self) -> "Monitor":
        return self.attach()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def links(self) -> list[Link]:
        return self.agent.links()

    @property
    def notices(self) -> list[str]:
        return self.agent.notices

    def snapshot(self) -> Snapshot:
        return self.agent.snapshot()

    def sync(self) -> None:
        for watch in list(self.agent.watches.values()):
            self.agent.sync(watch)
