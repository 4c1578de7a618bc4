"""`tcflow status` and `tcflow detach`: find tcflow's hooks, wherever they are.

Two sources, reconciled: the pinned maps (what a --pin tcflow recorded) and
the kernel (what is really on each interface's XDP and clsact hooks, in
every network namespace tcflow can reach). Neither needs bcc.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, Optional

from tcflow.containers import scan
from tcflow.engine.carried import CarriedTotals, carried_path
from tcflow.host import hooks as _hooks
from tcflow.host import journal
from tcflow.host import pins as _pins
from tcflow.host.interfaces import Interface, list_interfaces, lookup
from tcflow.model.errors import InterfaceError, TcflowError
from tcflow.model.names import shown
from tcflow.model.snapshot import Snapshot, make_snapshot
from tcflow.model.targets import Where, split
from tcflow.system import netns as _netns


def _hooks_text(found: dict[str, Any]) -> tuple[str, str]:
    recv = "xdp (" + str(found["xdp_mode"]) + ")" if found["xdp"] else ("tc" if found["tc_ingress"] else "-")
    return recv, "tc" if found["tc_egress"] else "-"


def collect(pin_dir: str) -> dict[str, Any]:
    """Everything `tcflow status` reports, as plain data."""
    pinned: list[_pins.Entry] = []
    pin_error = None
    if _pins.exists(pin_dir):
        try:
            with _pins.Store(pin_dir) as store:
                pinned = store.entries()
        except TcflowError as err:
            pin_error = str(err)
    by_key = {(e.netns_cookie, e.ifindex): e for e in pinned}
    rows, others = [], []
    seen = set()
    for label, path, inode in _netns.all_namespaces():
        cookie = _netns.cookie_of_current() if not label else _netns.cookie_of(path)
        if cookie is None:
            continue  # gone since it was listed
        try:
            ipr = _hooks.ipr_for(_netns.Netns(label, path, inode, cookie))
        except Exception:
            continue
        try:
            for ifindex, ifname, kind, *_ in list_interfaces(ipr):
                found = _hooks.tcflow_hooks(ipr, ifindex)
                if not (found["xdp"] or found["tc_ingress"] or found["tc_egress"]):
                    continue
                e = by_key.get((cookie, ifindex))
                seen.add((cookie, ifindex))
                recv, send = _hooks_text(found)
                rows.append({
                    "netns": shown(label) if label else "-", "interface": shown(ifname), "ifindex": ifindex,
                    "cookie": cookie,
                    "kind": kind or "device",
                    "recv": recv, "send": send, "pinned": e is not None,
                    "since": e.attached_at if e else None,
                    "by_pid": e.pid if e else None,
                    "by_pid_running": pid_alive(e.pid) if e and e.pid else None,
                    "complete": bool(found["tc_egress"] and (found["xdp"] or found["tc_ingress"])),
                })
                for hook, desc in found["others"]:
                    others.append({"netns": shown(label) if label else "-", "interface": shown(ifname),
                                   "hook": hook, "program": shown(desc)})
        finally:
            ipr.close()
    stale = [{"netns": shown(e.netns) if e.netns else "-", "interface": shown(e.ifname), "ifindex": e.ifindex,
              "slot": e.slot}
             for e in pinned if (e.netns_cookie, e.ifindex) not in seen]
    return {"pin_dir": pin_dir, "pinned": len(pinned), "pin_error": pin_error, "attached": rows,
            "other_programs": others, "stale_pins": stale}


def forget_carried(pin_dir: str) -> None:
    """The totals --containers carried across container restarts for these pins (engine/carried.py)."""

    try:
        os.unlink(carried_path(pin_dir))
    except OSError:
        pass


def _remove(entry_ns_path: Optional[str], label: str, cookie: int, ifindex: int, ifname: str,
            created_clsact: bool) -> Optional[dict[str, Any]]:
    """Remove tcflow's hooks from one interface, and the clsact qdisc if tcflow made
    it (pinned meta or the journal) and it is empty; None if the interface is gone.
    The result says what was found, plus ``clsact``: an empty one removed."""
    if entry_ns_path is None:
        return None
    ns = _netns.Netns(label, entry_ns_path, 0, cookie)
    ipr = _hooks.ipr_for(ns)
    try:
        if not any(i == ifindex for i, *_ in list_interfaces(ipr)):
            journal.forget(cookie, ifindex)
            return None
        interface = Interface(ifname, ifindex, ns)
        had_qdisc = _hooks.has_clsact(ipr, ifindex)
        if not had_qdisc:
            journal.forget(cookie, ifindex)  # a note from a run killed before it added the qdisc
        found = _hooks.remove_found(ipr, interface, created_clsact)
        found["clsact"] = had_qdisc and not _hooks.has_clsact(ipr, ifindex)
        return found
    finally:
        ipr.close()


def detach_all(pin_dir: str) -> list[str]:
    """Every pinned attachment: hooks off, entries gone, then the pins."""
    if not _pins.verify(pin_dir):
        return [f"nothing is pinned under {pin_dir}"]
    lines = []
    with _pins.Lock(pin_dir):
        if _pins.exists(pin_dir):
            with _pins.Store(pin_dir) as store:
                for e in store.entries():
                    own = _netns.cookie_of_current() == e.netns_cookie
                    path = "/proc/self/ns/net" if own else _netns.find(e.netns_inode, e.netns_cookie, e.netns_path)
                    label = "" if own else (e.netns or f"inode:{e.netns_inode}")
                    found = _remove(path, label, e.netns_cookie, e.ifindex, e.ifname, e.created_clsact)
                    where = f"{shown(e.netns)}/{shown(e.ifname)}" if e.netns else shown(e.ifname)
                    lines.append(f"detached {where}" if found else f"forgot {where} (interface or namespace gone)")
                    store.remove(e)
        _pins.unpin(pin_dir)
    forget_carried(pin_dir)
    left = list(_pins.iter_pin_files(pin_dir))
    if left:
        lines.append(f"left {pin_dir} in place: it holds files tcflow did not make: {', '.join(left)}")
    else:
        lines.append(f"removed the pins under {pin_dir}")
    return lines


def detach_named(words: list[str], default: Where, pin_dir: str) -> list[str]:
    """Remove tcflow from these interfaces (IFACE or NETNS/IFACE), pinned or
    not; error if one of them had none of it."""
    interfaces: list[Interface] = []
    for word in words:
        where, name = split(word, default)
        ns = _netns.resolve(where.netns, where.pid)
        ipr = _hooks.ipr_for(ns)
        try:
            interfaces.append(lookup(list_interfaces(ipr), ns, name))
        finally:
            ipr.close()
    lines = []
    with contextlib.ExitStack() as stack:
        store = None
        if _pins.exists(pin_dir):
            stack.enter_context(_pins.Lock(pin_dir))
            store = stack.enter_context(_pins.Store(pin_dir))
        entries = {(e.netns_cookie, e.ifindex): e for e in store.entries()} if store else {}
        for interface in interfaces:
            ns = interface.netns
            e = entries.get((ns.cookie, interface.ifindex))
            path = ns.path if ns.name else "/proc/self/ns/net"
            found = _remove(path, ns.name, ns.cookie, interface.ifindex, interface.ifname,
                            e.created_clsact if e else False)
            had = bool(found and (found["xdp"] or found["tc_ingress"] or found["tc_egress"] or found["clsact"]))
            if e is not None and store is not None:
                store.remove(e)
            if not had and e is None:
                raise InterfaceError("tcflow is not attached here", ifname=interface.key,
                                     hint="`{fix}` lists where it is", fix=("status",))
            lines.append(f"detached {interface.key}" + (" (and its pin)" if e else ""))
        if store is not None and not store.entries():
            store.close()  # the maps are unpinned under the lock, then the lock goes
            _pins.unpin(pin_dir)
            lines.append(f"no pinned interface left: removed the pins under {pin_dir}")
    return lines


def detach_stale(pin_dir: str) -> list[str]:
    """Forget pinned entries whose interface (or namespace) is gone or has
    none of tcflow's hooks left: what a run before this one left behind."""
    if not _pins.verify(pin_dir) or not _pins.exists(pin_dir):
        return [f"nothing is pinned under {pin_dir}"]
    lines = []
    with _pins.Lock(pin_dir):
        live = {(r["cookie"], r["ifindex"]) for r in collect(pin_dir)["attached"]}
        with _pins.Store(pin_dir) as store:
            for e in store.entries():
                if (e.netns_cookie, e.ifindex) not in live:
                    store.remove(e)
                    lines.append(f"forgot {shown(e.netns) + '/' if e.netns else ''}{shown(e.ifname)} (slot {e.slot}): "
                                 "its interface or namespace is gone")
            left = len(store.entries())
        if not left:
            _pins.unpin(pin_dir)
            lines.append(f"no pinned interface left: removed the pins under {pin_dir}")
    return lines or ["no stale pinned entries"]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_pinned(pin_dir: str, containers: bool = False) -> Snapshot:
    """What `tcflow show` prints: the pinned counters (host/pins.py), or with
    ``containers`` only those in a running container's namespace, with its
    identity and the totals its earlier lives carried (as `serve
    --containers --pin` reports them)."""
    if not containers:
        return _pins.read_snapshot(pin_dir)
    with _pins.Store(pin_dir) as store:
        entries = store.entries()
        sums = store.counters([e.slot for e in entries])
    groups = {g.inode: g for g in scan() if not g.host_network}
    carried = CarriedTotals(pin_dir)
    out = []
    for e in entries:
        g = groups.get(e.netns_inode)
        if g is None:
            continue
        b, p = carried.plus((g.key, e.ifname), sums[e.slot])
        out.append((shown(e.ifname), shown(e.netns), e.ifindex, e.hooks, b, p, g.labels()))
    return make_snapshot(out)
