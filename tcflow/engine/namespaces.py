"""Namespaces and interfaces that come and go while an agent runs: link
events in every watched namespace, namespaces that were deleted, container
namespaces that discovery planned, and programs verified ahead for the next
one. The Agent (agent.py) is built on this; the loop (loop.py) calls it.
"""

from __future__ import annotations

import threading
from typing import Any, ContextManager, Optional

from tcflow.bpf.loader import Datapath
from tcflow.containers.discovery import Discovery
from tcflow.containers.status import PeerMap
from tcflow.engine.binding import Binder
from tcflow.engine.carried import CarriedTotals
from tcflow.engine.slots import SlotTable
from tcflow.engine.watch import Watch
from tcflow.host import hooks, journal, owners
from tcflow.host.interfaces import Interface, diff

HOOK_WORDS = {"xdp": "XDP", "tc_ingress": "clsact ingress", "tc_egress": "clsact egress"}
LOST_KEPT = 64


class NamespaceEvents:
    """The Agent's half that follows changes. What it needs of the Agent is
    declared here; the Agent provides it."""

    watches: dict[int, Watch]
    dp: Optional[Datapath]
    slots: Optional[SlotTable]
    binder: Optional[Binder]
    discovery: Optional[Discovery]
    carried: Optional[CarriedTotals]
    notices: list[str]
    lost_hooks: list[str]
    attach_errors: int
    _spare_loader: Optional[threading.Thread]
    _peers: PeerMap

    def _lock(self) -> ContextManager[Any]:
        raise NotImplementedError

    def _release(self, watch: Watch, interface: Interface, detach: bool) -> list[Exception]:
        raise NotImplementedError

    def _carry(self, interface: Interface) -> None:
        raise NotImplementedError

    def event_fds(self) -> dict[int, Watch]:
        """Netlink sockets readable on link changes, one per namespace. A
        namespace that went before its socket was made has none: unwatch_deleted()
        lets it go."""
        out = {}
        for w in self.watches.values():
            try:
                out[w.events_fd()] = w
            except OSError:
                continue
        return out

    def following(self) -> bool:
        """True if interfaces may come later: --containers, or --follow somewhere."""
        return self.discovery is not None or any(w.follow for w in self.watches.values())

    def sync(self, watch: Watch) -> None:
        """Forget interfaces that are gone (their counters go with them);
        with follow, attach new matches. Errors attaching a new interface
        become notices: the others keep being counted."""
        links, touched = watch.drain()
        if not links:  # filters and qdiscs only
            with self._lock():
                for ifindex in sorted(touched):
                    if ifindex in watch.interfaces:
                        self._check_hooks(watch, watch.interfaces[ifindex])
            return
        d = diff(watch.interfaces.values(), watch.present(), watch.ns, watch.globs, watch.follow)
        if d.new or d.gone or d.renamed:
            self._peers.changed()  # a container's veth may have come or gone
        binder = self.binder
        assert binder is not None and self.slots is not None
        container = self.discovery is not None and self.discovery.identity(watch.ns.cookie) is not None
        with self._lock(), self.slots.batch():
            for interface in d.gone:
                watch.interfaces.pop(interface.ifindex, None)
                self._carry(interface)
                binder.release(None, interface, detach=False, forget=True)
                journal.forget(interface.netns.cookie, interface.ifindex)  # its qdisc went with it
                if not container:  # containers come and go: no news
                    self.notices.append(f"{interface.key} disappeared; its counters are no longer reported")
            for interface, name, up in d.renamed:
                if not container:
                    interface.ifname = name  # same device, same counters
                elif up:
                    # A container's interface, renamed and up: the runtime named it
                    # (vethXXX -> eth0, seen up under the first name when the scan
                    # found the container early). A rename of one that is down is
                    # the runtime taking it away as the container stops (eth0 ->
                    # vethXXX): it keeps the name it was counted as.
                    interface.ifname = interface.attachment.bound_as = name
            for interface in d.new:
                self._bind_new(watch, interface)
            for ifindex in sorted(touched):
                held = watch.interfaces.get(ifindex)
                if held is not None and held not in d.new:
                    self._check_hooks(watch, held)

    def _check_hooks(self, watch: Watch, interface: Interface) -> None:
        """After an event on ``interface``: if its hooks are no longer this
        agent's (`tc filter del`, `ip link set dev X xdp off`, `tcflow detach
        --force`), say so and stop counting it; what is left of this agent's
        hooks there is taken off too, and nothing of anyone else's."""
        assert self.binder is not None and self.dp is not None
        try:
            found = hooks.tcflow_hooks(watch.ipr, interface.ifindex)
        except Exception:
            return  # the interface went meanwhile: its link event (a full resync) deals with it
        ours = self.dp.map_ids()
        mine = {hook for hook, prog in found["ids"].items() if owners.counters_of(prog) in ours}
        recv = "xdp" if interface.attachment.ingress == "xdp" else "tc_ingress"
        if {recv, "tc_egress"} <= mine:
            return
        gone = [h for h in (recv, "tc_egress") if h not in mine]
        watch.interfaces.pop(interface.ifindex, None)
        self._carry(interface)
        interface.attachment.attached = {h: h in mine for h in ("xdp", "tc_ingress", "tc_egress")}
        self.binder.release(watch.ipr, interface, detach=True, forget=True)
        self.lost_hooks.append(interface.key)
        del self.lost_hooks[:-LOST_KEPT]  # /healthz names the latest; bounded however often it happens
        many = len(gone) > 1
        self.notices.append(f"tcflow's {' and '.join(HOOK_WORDS[h] for h in gone)} hook{'s' if many else ''} on "
                            f"{interface.key} {'were' if many else 'was'} removed by another process (`tcflow "
                            "detach --force`, `tc filter del`, `ip link set ... xdp off`?): it is no longer counted")

    def _bind_new(self, watch: Watch, interface: Interface) -> None:
        assert self.binder is not None
        watch.interfaces[interface.ifindex] = interface
        try:
            self.binder.bind(watch.ipr, interface, self.notices)
        except Exception as e:
            self._release(watch, interface, detach=True)
            self.attach_errors += 1
            self.notices.append(f"could not attach {interface.key}: {e}")

    def unwatch_deleted(self) -> list[str]:
        """Let go of namespaces that were deleted; their labels."""
        gone = [w for w in self.watches.values() if not w.alive()]
        for watch in gone:
            self.unwatch(watch)
        return [w.ns.label for w in gone]

    def unwatch(self, watch: Watch) -> None:
        """Stop watching one namespace: its interfaces released (a container's
        final counts carried), its sockets and programs closed."""
        with self._lock():
            for interface in list(watch.interfaces.values()):
                self._release(watch, interface, detach=True)
        watch.close()
        self.watches.pop(watch.ns.cookie, None)
        if self.discovery is not None:
            self.discovery.forget(watch.ns.cookie)
        if self.dp is not None:
            self.dp.release(watch.ns.cookie)

    def discover(self) -> int:
        """--containers: apply discovery's plan; how many namespaces it added."""
        if self.discovery is None or self.binder is None:
            return 0
        with self._lock():
            added = self._discover()
        if self.carried is not None:  # at most once a minute: the totals of removed containers go
            self.carried.prune(self.discovery.docker_removed)
        return added

    def _discover(self) -> int:
        assert self.discovery is not None and self.slots is not None
        plan = self.discovery.plan({cookie: w.ns for cookie, w in self.watches.items()})
        if plan.new or plan.ended:
            self._peers.changed()
        for cookie in plan.ended:  # first: their final counts are carried before the new lives count
            if cookie in self.watches:
                self.unwatch(self.watches[cookie])
        for ns, _group in plan.new:
            try:
                watch = Watch(ns)
            except Exception:
                self.discovery.forget(ns.cookie)  # the container went while we looked
                continue
            watch.globs, watch.follow = ["*"], True
            self.watches[ns.cookie] = watch
            try:
                # Listen first, then list: an interface that comes up in between is
                # an event, not missed. Interfaces still down wait for that
                # event: the runtime has not named (eth0) and raised them yet.
                watch.events_fd()
                found = watch.plan((), tuple(watch.globs), True, up_only=True)
            except Exception as e:  # the container went while we looked: the next unwatch_deleted() lets it go
                self.notices.append(f"could not watch container {watch.ns.label}: {e}")
                continue
            with self.slots.batch():
                for interface in found:
                    self._bind_new(watch, interface)
        return len(plan.new)

    def load_spare_set(self) -> None:
        """--containers: keep a set of programs verified ahead for the next
        container's namespace, so that it is counted from its first packet.
        The verifier runs in a thread of its own (about 60 ms): the loop goes
        on attaching and serving meanwhile. Programs only, no pins: no pin lock."""
        dp = self.dp
        if self.discovery is None or dp is None or (self._spare_loader is not None and self._spare_loader.is_alive()):
            return
        if dp.spare_sets():
            return

        def run() -> None:
            try:
                dp.load_spare_sets()
            except Exception as e:  # the next container then loads its own, a little later
                self.notices.append(f"could not load programs ahead for new containers: {e}")

        self._spare_loader = threading.Thread(target=run, name="tcflow-spare-loader", daemon=True)
        self._spare_loader.start()
