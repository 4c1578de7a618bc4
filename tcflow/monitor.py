"""Monitor: the library API that the CLI and exporters use.

    with tcflow.Monitor(["veth0"], netns="ns1") as m:
        snap = m.snapshot()

Attaching is all or nothing: if one interface fails, what was attached for
the others is removed again before the error is raised.

With ``match`` (shell globs) the Monitor also takes every interface whose
name matches; with ``follow`` it keeps doing so as interfaces appear, and
forgets the ones that disappear (``sync()``, driven by ``events_fd()``).

With ``pin=True`` the maps live under bpffs (tcflow/pins.py) and close()
leaves the programs attached; a later Monitor on the same interface adopts
them, so the counters carry on from where they were.
"""

from __future__ import annotations

import contextlib
import ctypes
import fnmatch
import os
import socket
import threading
from typing import Any, Iterator, Optional, Sequence

from . import _libbpf
from . import attach as _attach
from . import netns as _netns
from . import pins as _pins
from .counters import Snapshot, make_snapshot, read_slots
from .errors import InterfaceError, LimitError
from .loader import PROG_TC_EGRESS, PROG_TC_INGRESS, PROG_XDP, Datapath, Options, datapath

IFACE_F_INCLUDE_LOCAL = 1
INGRESS_CHOICES = ("auto", "xdp", "tc")
XDP_MODES = ("auto", "native", "generic")
RTMGRP_LINK = 1
_slot_lock = threading.Lock()
_slots_in_use: dict[int, set[int]] = {}  # id(datapath) -> slots this process holds

VETH_XDP_NOTICE = (
    "native XDP on veth {ifname}: the veth driver then segments every GSO packet it receives; "
    "on a 2-core VM with kernel 6.18, TCP over one veth fell from about 17 to about 4 Gbit/s. "
    "Use --ingress tc (the default for veths) to count without that cost."
)


def _slots_taken(dp: Datapath) -> set[int]:
    """Slots in the interface map now: one walk of it, for a batch of allocations."""
    return {v.slot for v in dp.ifaces.values()}


def _alloc_slot(dp: Datapath, taken: Optional[set[int]] = None) -> int:
    """A free slot. ``taken``, from _slots_taken() under the same pin lock,
    saves walking the map once per interface (quadratic at 1000); it is
    updated with the slot handed out."""
    with _slot_lock:
        held = _slots_in_use.setdefault(id(dp), set())
        in_map = _slots_taken(dp) if taken is None else taken
        for s in range(dp.options.max_ifaces):
            if s not in held and s not in in_map:
                held.add(s)
                if taken is not None:
                    taken.add(s)
                return s
    raise LimitError(f"all {dp.options.max_ifaces} interface slots are in use",
                     hint="detach interfaces, or raise the limit with --max-interfaces")


def _free_slot(dp: Datapath, slot: int) -> None:
    with _slot_lock:
        _slots_in_use.get(id(dp), set()).discard(slot)


class _NoLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


class Monitor:
    """Counters for a set of interfaces in one network namespace.

    ``ingress``: "auto" (default: native XDP on a physical NIC whose driver
    has it, clsact ingress on virtual devices such as veths and wherever
    native XDP is refused), "xdp" or "tc". ``xdp_mode`` (with "xdp"): "auto"
    (native, else generic), "native" or "generic". ``include_local`` counts
    loopback and src == dst traffic in the classes instead of only in LOCAL_*.
    """

    def __init__(self, interfaces: Sequence[str] = (), netns: Optional[str] = None, pid: Optional[int] = None,
                 ingress: str = "auto", xdp_mode: str = "auto", include_local: bool = False,
                 options: Optional[Options] = None, match: Sequence[str] = (), follow: bool = False,
                 pin: bool = False, pin_dir: Optional[str] = None):
        if ingress not in INGRESS_CHOICES:
            raise InterfaceError(f"unknown ingress hook {ingress!r}", hint="use auto, xdp or tc")
        if xdp_mode not in XDP_MODES:
            raise InterfaceError(f"unknown XDP mode {xdp_mode!r}", hint="use auto, native or generic")
        if not interfaces and not match:
            raise InterfaceError("no interface given", hint="name at least one, e.g. `tcflow attach eth0`, "
                                 "or give --match GLOB")
        if follow and not match:
            raise InterfaceError("--follow needs --match", hint="e.g. --match 'veth*' --follow")
        self.ifnames = list(dict.fromkeys(interfaces))
        self.match, self.follow = list(match), follow
        self.netns_arg, self.pid = netns, pid
        self.ingress, self.xdp_mode, self.include_local = ingress, xdp_mode, include_local
        self.pin = pin
        self.pin_dir = (pin_dir or _pins.default_pin_dir()) if pin else None
        options = options or Options()
        if pin and options.pin_dir != self.pin_dir:
            options = Options(options.max_ifaces, self.pin_dir)
        self.options = options
        self.links: list[_attach.Link] = []
        self._slots: dict[int, int] = {}  # ifindex -> slot
        self._adopted: set[int] = set()   # ifindexes whose hooks were already there (pinned)
        self.dp: Optional[Datapath] = None
        self.ns: Optional[_netns.Netns] = None
        self._ipr: Any = None
        self._events: Optional[socket.socket] = None
        self._taken: Optional[set[int]] = None  # slots in the map, during one locked batch
        self._in_batch = False
        self.notices: list[str] = []      # for the user: the CLI prints and clears them

    # -- lifecycle -------------------------------------------------------
    def attach(self) -> "Monitor":
        self.ns = _netns.resolve(self.netns_arg, self.pid)
        self._ipr = _attach.ipr_for(self.ns)
        try:
            present = _attach.list_links(self._ipr)  # one dump, not two requests per name
            by_name = {name: (ifindex, kind) for ifindex, name, kind in present}
            links = []
            for n in self.ifnames:
                if n in by_name:
                    links.append(_attach.Link(n, by_name[n][0], self.ns, by_name[n][1]))
                else:  # "no such interface", with the fix (unless it appeared just now)
                    links.append(_attach.lookup(self._ipr, self.ns, n))
            known = {ln.ifindex for ln in links}
            links += [ln for ln in self._matching(present) if ln.ifindex not in known]
            if not links and not self.follow:
                raise InterfaceError("no interface matches " + " ".join(repr(g) for g in self.match),
                                     hint="list interfaces with `ip link`, or add --follow to wait for them")
            if self.pin:
                assert self.pin_dir is not None
                _pins.ensure_bpffs(self.pin_dir)
            self.dp = datapath(self.options)
            with self._batch():
                for link in links:
                    self._attach_one(link)
        except BaseException:
            self._rollback()
            raise
        return self

    def _lock(self) -> Any:
        return _pins.Lock(self.pin_dir) if self.pin and self.pin_dir else _NoLock()

    @contextlib.contextmanager
    def _batch(self) -> Iterator[None]:
        """The pin lock; the map's slots are read once, at the first allocation
        under it, for all of them."""
        assert self.dp is not None
        with self._lock():
            self._in_batch = True
            try:
                yield
            finally:
                self._in_batch, self._taken = False, None

    def _matching(self, present: list[tuple[int, str, str]]) -> list[_attach.Link]:
        if not self.match:
            return []
        assert self.ns is not None
        out = []
        for ifindex, ifname, kind in present:
            if ifname == "lo":
                continue  # loopback only when named: SPEC counts it apart anyway
            if any(fnmatch.fnmatchcase(ifname, g) for g in self.match):
                out.append(_attach.Link(ifname, ifindex, self.ns, kind))
        return out

    def _choose_ingress(self, link: _attach.Link) -> str:
        if self.ingress != "auto":
            return self.ingress
        return "tc" if link.kind else "xdp"  # only physical drivers have no IFLA_INFO_KIND

    def _attach_one(self, link: _attach.Link) -> None:
        dp, ns = self.dp, self.ns
        assert dp is not None and ns is not None
        key = dp.ifaces.Key(ns.cookie, link.ifindex, 0)
        if self.pin and self._adopt(link, key):
            return
        if self._in_batch and self._taken is None:
            self._taken = _slots_taken(dp)
        slot = _alloc_slot(dp, self._taken)
        self._slots[link.ifindex] = slot
        # Zero the slot before the key goes in: a slot freed by an earlier
        # interface must not hand its counts to this one.
        dp.counters[ctypes.c_uint32(slot)] = dp.counters.Leaf()
        flags = IFACE_F_INCLUDE_LOCAL if self.include_local else 0
        dp.ifaces[key] = dp.ifaces.Leaf(slot, flags)
        self.links.append(link)
        cookie = ns.cookie
        ingress = self._choose_ingress(link)
        if ingress == "xdp":
            try:
                _attach.attach_xdp(self._ipr, link, dp.prog(PROG_XDP, cookie),
                                   self.xdp_mode if self.ingress == "xdp" else "native")
                link.ingress = "xdp"
            except _attach.NativeRefused:
                if self.ingress == "xdp":
                    raise
                ingress = "tc"  # auto: a driver without native XDP is counted on clsact
        if ingress == "tc":
            link.ingress = "tc"
            _attach.attach_tc(self._ipr, link, dp.prog(PROG_TC_INGRESS, cookie), "ingress")
        _attach.attach_tc(self._ipr, link, dp.prog(PROG_TC_EGRESS, cookie), "egress")
        if link.ingress == "xdp" and link.xdp_mode == "native" and link.kind == "veth":
            self.notices.append(VETH_XDP_NOTICE.format(ifname=link.ifname))
        if self.pin:
            meta = _pins.meta_for(slot, cookie=cookie, inode=ns.inode, netns=ns.name, netns_path=ns.path
                                  if ns.name else "", ifindex=link.ifindex, ifname=link.ifname,
                                  ingress=link.ingress, xdp_mode=link.xdp_mode, created_clsact=link.created_clsact,
                                  flags=flags)
            _libbpf.map_update(dp.map_fd("meta"), ctypes.c_uint32(slot), meta)

    def _adopt(self, link: _attach.Link, key: Any) -> bool:
        """Take over a pinned attachment that is still in place; True if done."""
        dp = self.dp
        assert dp is not None
        val = dp.ifaces.get(key)
        if val is None:
            return False
        found = _attach.tcflow_hooks(self._ipr, link.ifindex)
        if found["tc_egress"] and (found["xdp"] or found["tc_ingress"]):
            m = _pins.Meta()
            _libbpf.map_lookup(dp.map_fd("meta"), ctypes.c_uint32(val.slot), m)
            link.created_clsact = bool(m.created_clsact)
            link.ingress = "xdp" if found["xdp"] else "tc"
            link.xdp_mode = found["xdp_mode"]
            self._slots[link.ifindex] = val.slot
            self._adopted.add(link.ifindex)
            self.links.append(link)
            wanted = self._choose_ingress(link)
            if wanted != link.ingress:
                self.notices.append(f"{link.ifname} was already attached with recv on {link.ingress}; "
                                    f"kept as it is (detach it first to change the hook)")
            return True
        # Pinned, but its hooks were removed behind tcflow's back: start afresh.
        del dp.ifaces[key]
        return False

    def _release(self, link: _attach.Link, detach: bool) -> list[BaseException]:
        errors: list[BaseException] = []
        dp, ns, ipr = self.dp, self.ns, self._ipr
        if detach:
            for step in (
                lambda: _attach.detach_tc(ipr, link, "egress"),
                lambda: _attach.detach_tc(ipr, link, "ingress"),
                lambda: _attach.detach_xdp(ipr, link, dp.prog(PROG_XDP, ns.cookie))
                if dp and ns and link.attached.get("xdp") else None,
                lambda: _attach.drop_clsact_if_ours(ipr, link),
            ):
                try:
                    step()
                except BaseException as e:  # keep detaching the rest
                    errors.append(e)
        slot = self._slots.pop(link.ifindex, None)
        if dp is not None and ns is not None and slot is not None and (detach or not self.pin):
            try:
                del dp.ifaces[dp.ifaces.Key(ns.cookie, link.ifindex, 0)]
            except KeyError:
                pass
            if self.pin:
                    _libbpf.map_update(dp.map_fd("meta"), ctypes.c_uint32(slot), _pins.Meta())
        if dp is not None and slot is not None:
            _free_slot(dp, slot)
        self._adopted.discard(link.ifindex)
        return errors

    def _rollback(self) -> None:
        """After a failed attach: undo what this call did, keep what it adopted."""
        try:
            with self._lock() if self.dp is not None else _NoLock():
                for link in reversed(self.links):
                    self._release(link, detach=link.ifindex not in self._adopted)
                if self.pin and self.dp is not None and self.pin_dir and not len(self.dp.ifaces):
                    _pins.unpin(self.pin_dir)  # compiling made the maps; nothing is attached to use them
        finally:
            self.links = []
            self._close_handles()

    def close(self) -> None:
        """Detach everything this Monitor attached; safe to call twice.

        With ``pin``, nothing is detached: programs stay attached and counting
        into the pinned maps, for `tcflow show` or the next Monitor to adopt.
        """
        errors: list[BaseException] = []
        if not self.pin:
            for link in reversed(self.links):
                errors += self._release(link, detach=True)
        else:
            for link in self.links:
                self._slots.pop(link.ifindex, None)
        self.links = []
        self._close_handles()
        if errors:
            raise errors[0]

    def _close_handles(self) -> None:
        if self._events is not None:
            self._events.close()
            self._events = None
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None

    def __enter__(self) -> "Monitor":
        return self.attach()

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- interfaces that come and go -------------------------------------------
    def events_fd(self) -> int:
        """A netlink socket (in the monitored namespace) readable on link changes."""
        if self._events is None:
            assert self.ns is not None

            def make() -> socket.socket:
                s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK, 0)
                s.bind((0, RTMGRP_LINK))
                return s

            self._events = _netns.run_in(self.ns.path, make) if self.ns.name else make()
        return self._events.fileno()

    def drain_events(self) -> None:
        if self._events is None:
            return
        try:
            while self._events.recv(65536):
                pass
        except BlockingIOError:
            pass

    def sync(self) -> tuple[list[str], list[str]]:
        """Forget interfaces that are gone; with ``follow``, attach new matches.

        Returns (added, lost) interface names. A lost interface took its hooks
        with it; its counters are no longer reported. Errors attaching a new
        interface become notices: the others keep being counted.
        """
        assert self.ns is not None and self.dp is not None
        links_now = _attach.list_links(self._ipr)
        present = {ifindex: (name, kind) for ifindex, name, kind in links_now}
        lost, added = [], []
        with self._batch():
            for link in list(self.links):
                if link.ifindex not in present:
                    self.links.remove(link)
                    self._release(link, detach=False)
                    lost.append(link.ifname)
                elif present[link.ifindex][0] != link.ifname:
                    link.ifname = present[link.ifindex][0]  # renamed: same device, same counters
            if self.follow:
                held = {ln.ifindex for ln in self.links}
                for link in self._matching(links_now):
                    if link.ifindex in held:
                        continue
                    try:
                        self._attach_one(link)
                        added.append(link.ifname)
                    except Exception as e:
                        if link in self.links:
                            self.links.remove(link)
                            self._release(link, detach=True)
                        self.notices.append(f"could not attach {link.ifname}: {e}")
        for name in lost:
            where = f" in {self.ns.name}" if self.ns.name else ""
            self.notices.append(f"{name}{where} disappeared; its counters are no longer reported")
        return added, lost

    def namespace_alive(self) -> bool:
        """False once the namespace's name (or process) is gone.

        tcflow's own netlink sockets would keep a deleted namespace alive;
        the caller should close() then, which detaches and lets it go.
        """
        assert self.ns is not None
        if not self.ns.name:
            return True
        try:
            return os.stat(self.ns.path).st_ino == self.ns.inode
        except OSError:
            return False

    # -- read -------------------------------------------------------------
    def hooks(self, link: _attach.Link) -> dict[str, Any]:
        return {"ingress": link.ingress, "xdp_mode": link.xdp_mode if link.ingress == "xdp" else None,
                "egress": "tc", "pinned": self.pin}

    def snapshot(self) -> Snapshot:
        """Cumulative counters of every attached interface, one batch read."""
        dp, ns = self.dp, self.ns
        if dp is None or ns is None:
            raise InterfaceError("the monitor is not attached", hint="use `with Monitor(...)` or call attach()")
        nslots = max(self._slots.values(), default=-1) + 1
        sums = read_slots(dp.map_fd("counters"), nslots, dp.counters.total_cpu)
        entries = []
        for link in self.links:
            b, p = sums[self._slots[link.ifindex]]
            entries.append((link.ifname, ns.name, link.ifindex, self.hooks(link), b, p))
        return make_snapshot(entries)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
