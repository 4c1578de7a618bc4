"""Agent: one compile, any number of namespaces, interfaces added and removed
at run time. What the CLI, Monitor and the loop drive.

    agent = Agent(Settings(ingress="tc"))
    agent.start([Target(Where(netns="ns1"), ("veth0",)), Target(Where(netns="ns2"), ("veth0",))])
    snap = agent.snapshot()
    agent.close()

This file is the lifecycle: start (all or nothing: if one interface fails,
what was attached for the others is removed again before the error is
raised), close and what is read. namespaces.py follows the changes while it
runs; assemble.py makes the snapshots. With ``pin`` the maps live under
bpffs; close() leaves the programs attached and a later agent adopts them,
so counters carry on.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any, ContextManager, Iterable, Optional

from tcflow.bpf.loader import Datapath, Options
from tcflow.bpf.reader import read_slots
from tcflow.containers.discovery import Discovery
from tcflow.containers.status import PeerMap
from tcflow.engine.assemble import Sources, assemble
from tcflow.engine.binding import Binder
from tcflow.engine.carried import CarriedTotals, carried_key, runtimes_of
from tcflow.engine.flows import FlowTable
from tcflow.engine.namespaces import NamespaceEvents
from tcflow.engine.settings import Settings
from tcflow.engine.slots import SlotTable
from tcflow.engine.watch import Watch
from tcflow.host import pins
from tcflow.host.interfaces import Interface
from tcflow.model.errors import InterfaceError
from tcflow.model.snapshot import Snapshot
from tcflow.model.targets import Target
from tcflow.system import interrupts, netns

FULL_NOTICE_EVERY_S = 60.0


class Agent(NamespaceEvents):
    """``datapath``: a compiled Datapath to use instead of compiling one; the
    agent then leaves it open on close (its owner closes it), and takes its
    map sizes."""

    def __init__(self, settings: Optional[Settings] = None, datapath: Optional[Datapath] = None):
        self.settings = settings = settings or Settings()
        self.options: Options = datapath.options if datapath is not None else settings.options()
        self._borrowed = datapath
        # --pin: one lock, held across compile, pinning, attach and rollback
        self._pin_lock = pins.Lock(self.options.pin_dir, create=True) \
            if settings.pin and self.options.pin_dir else None
        self._made_pins = False  # this process's compile created the pinned maps
        self.watches: dict[int, Watch] = {}  # netns cookie -> Watch
        self.dp: Optional[Datapath] = None
        self.slots: Optional[SlotTable] = None
        self.binder: Optional[Binder] = None
        self.notices: list[str] = []  # for the user: the CLI prints and clears them
        self.lost_hooks: list[str] = []  # interfaces dropped: their hooks were removed by another process
        self.attach_errors = 0        # interfaces that matched but could not be attached (follow)
        self.discovery: Optional[Discovery] = Discovery() if settings.containers else None
        self.carried: Optional[CarriedTotals] = CarriedTotals(self.pin_dir) if settings.containers else None
        self._spare_loader: Optional[threading.Thread] = None
        self._peers = PeerMap()  # host-side veths -> their containers
        self.flows: Optional[FlowTable] = None  # --flows
        self.flows_top = settings.flows_top     # flows per interface in a snapshot (top may ask for more)
        self._full_said = 0.0
        self.left_attached: list[str] = []  # --pin: what close() left attached and counting

    @property
    def pin_dir(self) -> Optional[str]:
        return self.options.pin_dir if self.settings.pin else None

    def _lock(self) -> ContextManager[Any]:
        return self._pin_lock if self._pin_lock is not None else contextlib.nullcontext()

    def _compile(self) -> Binder:
        if self.binder is None:
            self._made_pins = bool(self.pin_dir) and not pins.exists(str(self.pin_dir))
            self.dp = self._borrowed or Datapath(self.options)
            self.slots = SlotTable(self.dp)
            if self.options.flows:
                self.flows = FlowTable(self.dp, self.settings.flow_idle, owns=self.slots.holds)
                self.slots.on_bind = self.flows.purge
                self.slots.on_adopt = self.flows.adopt
            self.binder = Binder(self.dp, self.slots, self.settings)
        return self.binder

    # -- lifecycle -------------------------------------------------------
    def start(self, targets: Iterable[Target]) -> "Agent":
        """Resolve every target, compile once, attach all; or undo it all and raise."""
        try:
            plan = [self._plan(t) for t in targets]
        except BaseException:
            self._close_handles()
            raise
        try:
            with self._lock():
                try:
                    binder = self._compile()
                    assert self.slots is not None
                    with self.slots.batch():
                        for watch, found in plan:
                            for interface in found:
                                watch.interfaces[interface.ifindex] = interface
                                with interrupts.shielded():  # Ctrl-C waits for this interface's attach
                                    binder.bind(watch.ipr, interface, self.notices)
                    if self.discovery is not None:
                        self._discover()
                    self.refresh_peers(now=True)
                    self.tick_flows()  # the flows' first read: rates from here on
                except BaseException:
                    self.abort()  # under the same lock
                    raise
        except BaseException:
            self._close_handles()  # also when the lock itself could not be had
            raise
        return self

    def _plan(self, t: Target) -> tuple[Watch, list[Interface]]:
        ns = netns.resolve(t.where.netns, t.where.pid)
        watch = self.watches.get(ns.cookie)
        if watch is None:
            watch = self.watches[ns.cookie] = Watch(ns)
        return watch, watch.plan(t.names, t.globs, t.follow)

    def abort(self) -> None:
        """After a failed start: undo what this agent did, keep what it adopted."""
        try:
            with self._lock():
                with interrupts.shielded():  # the rollback runs to its end
                    for watch in self.watches.values():
                        for interface in reversed(list(watch.interfaces.values())):
                            self._release(watch, interface, detach=True)
                if self.pin_dir and self._made_pins and self.dp is not None and not self.dp.interface_entries():
                    pins.unpin(self.pin_dir, only_ids=self.dp.map_ids())  # ours, and nothing uses them
        finally:
            self._close_handles()

    def _carry(self, interface: Interface) -> None:
        """Keep the final counts of a container's interface before its slot goes."""
        binder, dp = self.binder, self.dp
        if self.discovery is None or self.carried is None or binder is None or dp is None \
                or (interface.netns.cookie, interface.ifindex) not in binder.slot_of:
            return
        group = self.discovery.identity(interface.netns.cookie)
        if group is None:
            return
        slot = binder.slot(interface)
        self.carried.add(carried_key(group, interface), read_slots(dp.map_fd("counters"), slot + 1, dp.ncpus)[slot],
                         runtimes_of(group))

    def _release(self, watch: Watch, interface: Interface, detach: bool) -> list[Exception]:
        watch.interfaces.pop(interface.ifindex, None)
        if self.binder is None:
            return []
        self._carry(interface)
        adopted = self.binder.is_adopted(interface)
        return self.binder.release(watch.ipr, interface, detach=detach and not adopted, forget=detach and not adopted)

    def close(self) -> None:
        """Detach everything; with --pin, leave it attached and counting into
        the pinned maps, for `tcflow show` or the next agent to adopt."""
        errors: list[Exception] = []
        self.left_attached = [i.key for i in self.interfaces()] if self.settings.pin else []
        if not self.settings.pin:
            with interrupts.shielded():
                for watch in self.watches.values():
                    for interface in reversed(list(watch.interfaces.values())):
                        errors += self._release(watch, interface, detach=True)
        self._close_handles()
        if errors:
            raise errors[0]

    def _close_handles(self) -> None:
        if self._spare_loader is not None:
            self._spare_loader.join(timeout=30)
            self._spare_loader = None
        if self.discovery is not None:
            self.discovery.close()
        cookies = list(self.watches)
        for watch in self.watches.values():
            watch.close()
        self.watches = {}
        if self.dp is not None:
            if self.dp is self._borrowed:
                for cookie in cookies:
                    self.dp.release(cookie)
            else:
                self.dp.close()
            self.dp = self.slots = self.binder = None

    def __enter__(self) -> "Agent":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- read -------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """What an operator checks: interfaces counted, slots used of the map's
        size, programs loaded, namespaces watched, and whether it follows."""
        return {"interfaces": len(self.interfaces()), "slots_used": self.slots.in_use() if self.slots else 0,
                "slots": self.options.max_interfaces, "programs": self.dp.programs_loaded if self.dp else 0,
                "namespaces": len(self.watches), "following": self.following(),
                "attach_errors": self.attach_errors, "hooks_removed": list(self.lost_hooks),
                "containers": sum(len(g.containers) for g in self.discovery.groups.values())
                if self.discovery else None,
                "discovery": self.discovery.health() if self.discovery else None,
                "carried_totals": len(self.carried.totals) if self.carried else None,
                "carried_forgotten": self.carried.pruned if self.carried else None}

    def program_stats(self) -> dict[str, tuple[int, int]]:
        return self.dp.program_stats() if self.dp is not None else {}

    def interfaces(self) -> list[Interface]:
        return [interface for w in self.watches.values() for interface in w.interfaces.values()]

    def snapshot(self, flows_max_age: float = 0.0) -> Snapshot:
        """Cumulative counters of every attached interface, one batch read.
        ``flows_max_age``: the flows may come from the loop's last read of the
        flow table if it is at most this old (serve: FLOWS_SHARED_S)."""
        if self.dp is None or self.binder is None:
            raise InterfaceError("the agent is not started", hint="call start() first")
        return assemble(self.interfaces(), Sources(self.dp, self.binder, self.settings.pin, self.flows,
                                                   self.flows_top, self.discovery, self.carried, self._peers,
                                                   flows_max_age))

    def refresh_peers(self, now: bool = False) -> None:
        """Rebuild the map of host-side veths to their containers when it is
        due (the loop calls this; a snapshot only looks it up), if any
        counted veth outside a container needs it."""
        if not now and not self._peers.due():
            return
        d = self.discovery
        needed = any(i.kind == "veth" and i.peer and (d is None or d.identity(i.netns.cookie) is None)
                     for i in self.interfaces())
        self._peers.rebuild([] if not needed else list(d.groups.values()) if d is not None else None)

    def tick_flows(self) -> None:
        """Rates and eviction of the flow table (--flows); the loop calls it once a second."""
        if self.flows is not None:
            if self.flows.tick() and time.monotonic() - self._full_said > FULL_NOTICE_EVERY_S:
                self._full_said = time.monotonic()
                self.notices.append(f"the flow table is full ({self.flows.capacity} flows): new flows are counted "
                                    "in each interface's overflow total; raise --flow-entries")
