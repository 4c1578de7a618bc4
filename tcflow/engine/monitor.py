"""Monitor: the library's short form for interfaces in one namespace.

    with tcflow.Monitor(["veth0"], netns="ns1") as m:
        snap = m.snapshot()

A thin facade over Agent (tcflow/engine/agent.py), which serves any number of
namespaces; use that directly for more than one.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Optional, Sequence

from tcflow.bpf.loader import Datapath
from tcflow.engine import loop
from tcflow.engine.agent import Agent
from tcflow.engine.settings import Settings
from tcflow.host.interfaces import Interface
from tcflow.model.errors import UsageError
from tcflow.model.snapshot import Snapshot
from tcflow.model.targets import Target, Where


class Monitor:
    """Counters for a set of interfaces in one network namespace.

    ``ingress``: "auto" (default: native XDP on a physical NIC whose driver
    has it, clsact ingress on virtual devices such as veths and wherever
    native XDP is refused), "xdp" or "tc". ``xdp_mode`` (with "xdp"): "auto"
    (native, else generic), "native" or "generic". ``include_local`` counts
    loopback and src == dst traffic in the classes instead of only in LOCAL_*.
    ``match``/``follow``: also take interfaces whose name matches a glob, and
    keep doing so as they appear (``sync()``, or ``run()``). ``pin``: counters
    live under bpffs and outlive the process. ``datapath``: reuse a compiled
    Datapath (left open on close) instead of compiling. Any other Settings
    field (``flows``, ``max_interfaces``...) may be given by name; a value
    the CLI would refuse raises the same UsageError here.
    """

    def __init__(self, interfaces: Sequence[str] = (), netns: Optional[str] = None, pid: Optional[int] = None,
                 ingress: str = "auto", xdp_mode: str = "auto", include_local: bool = False,
                 match: Sequence[str] = (), follow: bool = False, pin: bool = False, pin_dir: Optional[str] = None,
                 datapath: Optional[Datapath] = None, **settings: Any):
        if not interfaces and not match:
            raise UsageError("no interface given", hint="name at least one, or give --match GLOB")
        if follow and not match:
            raise UsageError("--follow needs --match", hint="e.g. --match 'veth*' --follow")
        self.target = Target(Where(netns, pid), tuple(dict.fromkeys(interfaces)), tuple(match), follow)
        self.agent = Agent(Settings(ingress, xdp_mode, include_local, pin, pin_dir, **settings), datapath)

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
    def interfaces(self) -> list[Interface]:
        return self.agent.interfaces()

    @property
    def notices(self) -> list[str]:
        return self.agent.notices

    def snapshot(self) -> Snapshot:
        return self.agent.snapshot()

    def sync(self) -> None:
        for watch in list(self.agent.watches.values()):
            self.agent.sync(watch)

    def run(self, tick: Callable[[Snapshot], bool], interval: float = 1.0,
            notice: Callable[[str], None] = lambda text: None) -> None:
        """Call ``tick`` with a snapshot every ``interval`` seconds until it
        returns False or SIGINT/SIGTERM arrives, following interface changes
        meanwhile: the loop `tcflow attach` runs (engine/loop.py)."""
        with loop.Signals() as sig:
            sig.looping = True
            loop.run(self.agent, sig, interval, lambda: tick(self.agent.snapshot()), contextlib.nullcontext, notice)
