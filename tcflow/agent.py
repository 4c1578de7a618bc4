"""Agent: one compile, any number of namespaces, interfaces added and removed
at run time. What the CLI and the exporters drive.

    agent = Agent(Settings(ingress="tc"))
    agent.start([Target(Where(netns="ns1"), ("veth0",)), Target(Where(netns="ns2"), ("veth0",))])
    snap = agent.snapshot()
    agent.close()

Starting is all or nothing: if one interface fails, what was attached for the
others is removed again before the error is raised. With ``pin_dir`` the
maps live under bpffs; close() leaves the programs attached and a later
agent adopts them, so counters carry on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from typing import Any, ContextManager, Iterable, Optional

from . import journal, netns, pins
from .binding import Binder, Settings
from .container_status import PeerMap
from .errors import InterfaceError
from .fleet import Fleet
from .flows import DEFAULT_TOP, IDLE_S, FlowTable, unattributed
from .links import Link, diff
from .loader import Datapath, Options
from .names import shown
from .reader import read_slots
from .slots import SlotTable
from .snapshot import Hooks, Snapshot, make_snapshot
from .targets import Target
from .watch import Watch


class Agent:
    """``datapath``: a compiled Datapath to use instead of compiling one; the
    agent then leaves it open on close (its owner closes it)."""

    def __init__(self, settings: Optional[Settings] = None, options: Optional[Options] = None,
                 datapath: Optional[Datapath] = None):
        settings, options = settings or Settings(), options or Options()
        if settings.pin and not options.pin_dir:
            options = dataclasses.replace(options, pin_dir=pins.default_pin_dir())
        if datapath is not None:
            options = datapath.options
        self.settings, self.options = settings, options
        self._borrowed = datapath
        # --pin: one lock, held across compile, pinning, attach and rollback
        self._pin_lock = pins.Lock(options.pin_dir, create=True) if settings.pin and options.pin_dir else None
        self._made_pins = False  # this process's compile created the pinned maps
        self.watches: dict[int, Watch] = {}  # netns cookie -> Watch
        self.dp: Optional[Datapath] = None
        self.slots: Optional[SlotTable] = None
        self.binder: Optional[Binder] = None
        self.notices: list[str] = []  # for the user: the CLI prints and clears them
        self.attach_errors = 0        # interfaces that matched but could not be attached (follow)
        self.fleet: Optional[Fleet] = Fleet(pin_dir=self.pin_dir) if settings.containers else None
        self._warmer: Optional[threading.Thread] = None
        self._peers = PeerMap()  # host-side veths -> their containers
        self.flows: Optional[FlowTable] = None  # --flows
        self.flows_top = DEFAULT_TOP            # flows per interface in a snapshot
        self.flow_idle = IDLE_S                 # seconds unchanged before a flow is evicted
        self._full_said = 0.0

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
                self.flows = FlowTable(self.dp, self.flow_idle)
                self.slots.on_bind = self.flows.purge
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
                        for watch, links in plan:
                            for link in links:
                                watch.links[link.ifindex] = link
                                binder.bind(watch.ipr, link, self.notices)
                    if self.fleet is not None:
                        self._discover()
                except BaseException:
                    self.abort()  # under the same lock
                    raise
        except BaseException:
            self._close_handles()  # also when the lock itself could not be had
            raise
        return self

    def _plan(self, t: Target) -> tuple[Watch, list[Link]]:
        ns = netns.resolve(t.where.netns, t.where.pid)
        watch = self.watches.get(ns.cookie)
        if watch is None:
            watch = self.watches[ns.cookie] = Watch(ns)
        return watch, watch.plan(t.names, t.globs, t.follow)

    def abort(self) -> None:
        """After a failed start: undo what this agent did, keep what it adopted."""
        try:
            with self._lock():
                for watch in self.watches.values():
                    for link in reversed(list(watch.links.values())):
                        self._release(watch, link, detach=True)
                if self.pin_dir and self._made_pins and self.dp is not None and not self.dp.iface_entries():
                    pins.unpin(self.pin_dir, only_ids=self.dp.map_ids())  # ours, and nothing uses them
        finally:
            self._close_handles()

    def _release(self, watch: Watch, link: Link, detach: bool) -> list[Exception]:
        watch.links.pop(link.ifindex, None)
        if self.binder is None:
            return []
        if self.fleet is not None:
            self.fleet.carry(self, link)
        adopted = self.binder.is_adopted(link)
        return self.binder.release(watch.ipr, link, detach=detach and not adopted, forget=detach and not adopted)

    def close(self) -> None:
        """Detach everything; with --pin, leave it attached and counting into
        the pinned maps, for `tcflow show` or the next agent to adopt."""
        errors: list[Exception] = []
        if not self.settings.pin:
            for watch in self.watches.values():
                for link in reversed(list(watch.links.values())):
                    errors += self._release(watch, link, detach=True)
        self._close_handles()
        if errors:
            raise errors[0]

    def _close_handles(self) -> None:
        if self._warmer is not None:
            self._warmer.join(timeout=30)
            self._warmer = None
        if self.fleet is not None:
            self.fleet.close()
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

    # -- interfaces and namespaces that come and go ------------------------------
    def event_fds(self) -> dict[int, Watch]:
        """Netlink sockets readable on link changes, one per namespace. A
        namespace that went before its socket was made has none: reap()
        lets it go."""
        out = {}
        for w in self.watches.values():
            try:
                out[w.events_fd()] = w
            except OSError:
                continue
        return out

    def sync(self, watch: Watch) -> None:
        """Forget interfaces that are gone (their counters go with them);
        with follow, attach new matches. Errors attaching a new interface
        become notices: the others keep being counted."""
        watch.drain()
        d = diff(watch.links.values(), watch.present(), watch.ns, watch.globs, watch.follow)
        binder = self.binder
        assert binder is not None and self.slots is not None
        with self._lock(), self.slots.batch():
            for link in d.gone:
                watch.links.pop(link.ifindex, None)
                if self.fleet is not None:
                    self.fleet.carry(self, link)
                binder.release(None, link, detach=False, forget=True)
                journal.forget(link.netns.cookie, link.ifindex)  # its qdisc went with it
                if self.fleet is None or self.fleet.identity(link) is None:  # containers come and go: no news
                    self.notices.append(f"{link.key} disappeared; its counters are no longer reported")
            for link, name, up in d.renamed:
                if self.fleet is None or self.fleet.identity(link) is None:
                    link.ifname = name  # same device, same counters
                elif up:
                    # A container's interface, renamed and up: the runtime named it
                    # (vethXXX -> eth0, seen up under the first name when the scan
                    # found the container early). A rename of one that is down is
                    # the runtime taking it away as the container stops (eth0 ->
                    # vethXXX): it keeps the name it was counted as.
                    link.ifname = link.bound_as = name
            for link in d.new:
                watch.links[link.ifindex] = link
                try:
                    binder.bind(watch.ipr, link, self.notices)
                except Exception as e:
                    self._release(watch, link, detach=True)
                    self.attach_errors += 1
                    self.notices.append(f"could not attach {link.key}: {e}")

    def reap(self) -> list[str]:
        """Let go of namespaces that were deleted; their labels."""
        gone = [w for w in self.watches.values() if not w.alive()]
        for watch in gone:
            self.let_go(watch)
        return [w.ns.label for w in gone]

    def let_go(self, watch: Watch) -> None:
        """Stop watching one namespace: its links released (a container's
        final counts carried), its sockets and programs closed."""
        with self._lock():
            for link in list(watch.links.values()):
                self._release(watch, link, detach=True)
        watch.close()
        self.watches.pop(watch.ns.cookie, None)
        if self.fleet is not None:
            self.fleet.forget(watch.ns.cookie)
        if self.dp is not None:
            self.dp.release(watch.ns.cookie)

    def discover(self) -> int:
        """--containers: watch the containers that started since; how many."""
        if self.fleet is None or self.binder is None:
            return 0
        with self._lock():
            return self._discover()

    def _discover(self) -> int:
        assert self.fleet is not None and self.slots is not None and self.binder is not None and self.dp is not None
        new = self.fleet.discover(self)
        for watch in new:
            try:
                # Listen first, then list: a link that comes up in between is
                # an event, not missed. Links still down wait for that event:
                # the runtime has not named (eth0) and raised them yet.
                watch.events_fd()
                links = watch.plan((), tuple(watch.globs), True, up_only=True)
            except Exception as e:  # the container went while we looked: the next reap lets it go
                self.notices.append(f"could not watch container {watch.ns.label}: {e}")
                continue
            with self.slots.batch():
                for link in links:
                    watch.links[link.ifindex] = link
                    try:
                        self.binder.bind(watch.ipr, link, self.notices)
                    except Exception as e:
                        self._release(watch, link, detach=True)
                        self.attach_errors += 1
                        self.notices.append(f"could not attach {link.key}: {e}")
        return len(new)

    def warm(self) -> None:
        """--containers: keep a set of programs verified ahead for the next
        container's namespace, so that it is counted from its first packet.
        The verifier runs in a thread of its own (about 60 ms): the loop goes
        on attaching and serving meanwhile. Programs only, no pins: no pin lock."""
        dp = self.dp
        if self.fleet is None or dp is None or (self._warmer is not None and self._warmer.is_alive()):
            return
        if dp.spares():
            return

        def run() -> None:
            try:
                dp.warm()
            except Exception as e:  # the next container then loads its own, a little later
                self.notices.append(f"could not load programs ahead for new containers: {e}")

        self._warmer = threading.Thread(target=run, name="tcflow-warm", daemon=True)
        self._warmer.start()

    # -- read -------------------------------------------------------------
    def health(self) -> dict[str, Any]:
        """What an operator checks: interfaces counted, slots used of the map's
        size, programs loaded, namespaces watched, and whether it follows."""
        return {"interfaces": len(self.links()), "slots_used": self.slots.in_use() if self.slots else 0,
                "slots": self.options.max_ifaces, "programs": self.dp.programs_loaded if self.dp else 0,
                "namespaces": len(self.watches),
                "following": self.fleet is not None or any(w.follow for w in self.watches.values()),
                "attach_errors": self.attach_errors,
                "containers": sum(len(g.containers) for g in self.fleet.groups.values()) if self.fleet else None}

    def links(self) -> list[Link]:
        return [ln for w in self.watches.values() for ln in w.links.values()]

    def snapshot(self) -> Snapshot:
        """Cumulative counters of every attached interface, one batch read."""
        if self.dp is None or self.binder is None:
            raise InterfaceError("the agent is not started", hint="call start() first")
        links = [ln for ln in self.links() if (ln.netns.cookie, ln.ifindex) in self.binder.slot_of]
        slots = [self.binder.slot(ln) for ln in links]
        # flows first: the classes, read after, hold at least what the flows hold
        reports = self.flows.report(slots, self.flows_top) if self.flows is not None else None
        sums = read_slots(self.dp.map_fd("counters"), max(slots, default=-1) + 1, self.dp.ncpus)
        fleet = self.fleet
        entries = []
        for ln, s in zip(links, slots, strict=True):
            g = fleet.identity(ln) if fleet is not None else None
            b, p = fleet.totals(ln, sums[s]) if fleet is not None else sums[s]
            if g is None and ln.kind == "veth" and ln.peer:  # the host side of a container's veth?
                g = self._peers.container_of(ln.ifindex, ln.peer)
            entries.append((shown(ln.ifname), shown(ln.netns.name), ln.ifindex, self._hooks(ln), b, p,
                            g.labels() if g is not None else None))
        snap = make_snapshot(entries)
        if reports is not None:
            flows_of = {}
            for key, s in zip(snap.interfaces, slots, strict=True):
                r = reports[s]
                flows_of[key] = r.as_dict(unattributed(*sums[s], r))
            snap = dataclasses.replace(snap, flows=flows_of)
        return snap

    def tick_flows(self) -> None:
        """Rates and eviction of the flow table (--flows); the loop calls it once a second."""
        if self.flows is not None:
            if self.flows.tick() and time.monotonic() - self._full_said > 60:
                self._full_said = time.monotonic()
                self.notices.append(f"the flow table is full ({self.flows.capacity} flows): new flows are counted "
                                    "in each interface's overflow total; raise --flow-entries")

    def _hooks(self, ln: Link) -> Hooks:
        return Hooks(ln.ingress, ln.xdp_mode if ln.ingress == "xdp" else None, pinned=self.settings.pin)
