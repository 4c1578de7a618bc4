"""`tcflow status` and `tcflow detach`: find tcflow's hooks, wherever they are.

Two sources, reconciled: the pinned maps (what a --pin tcflow recorded) and
the kernel (what is really on each interface's XDP and clsact hooks, in
every network namespace tcflow can reach). Neither needs bcc.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Any, Optional

from tcflow.bpf import libbpf
from tcflow.containers import scan
from tcflow.engine.carried import CarriedTotals, carried_path
from tcflow.host import hooks as _hooks
from tcflow.host import journal, owners
from tcflow.host import pins as _pins
from tcflow.host.interfaces import Interface, list_interfaces, lookup
from tcflow.model.errors import AttachError, InterfaceError, TcflowError
from tcflow.model.names import shown
from tcflow.model.snapshot import Hooks, Snapshot, make_snapshot
from tcflow.model.targets import Where, split
from tcflow.system import netns as _netns


def _hooks_text(found: dict[str, Any]) -> tuple[str, str]:
    recv = "xdp (" + str(found["xdp_mode"]) + ")" if found["xdp"] else ("tc" if found["tc_ingress"] else "-")
    return recv, "tc" if found["tc_egress"] else "-"


def _entries(pin_dir: str) -> tuple[list[_pins.Entry], Optional[str]]:
    if not _pins.exists(pin_dir):
        return [], None
    try:
        with _pins.Store(pin_dir) as store:
            return store.entries(), None
    except TcflowError as err:
        return [], str(err)


def _walk_hooks() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every interface with one of tcflow's hooks, in every namespace tcflow
    can reach, and every other program found on those hooks."""
    rows, others = [], []
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
                recv, send = _hooks_text(found)
                rows.append({
                    "netns": shown(label) if label else "-", "interface": shown(ifname), "ifindex": ifindex,
                    "cookie": cookie, "kind": kind or "device", "recv": recv, "send": send,
                    "programs": sorted(found["ids"].values()),
                    "complete": bool(found["tc_egress"] and (found["xdp"] or found["tc_ingress"])),
                })
                for hook, desc in found["others"]:
                    others.append({"netns": shown(label) if label else "-", "interface": shown(ifname),
                                   "hook": hook, "program": shown(desc)})
        finally:
            ipr.close()
    return rows, others


def collect(pin_dir: str) -> dict[str, Any]:
    """Everything `tcflow status` reports, as plain data.

    Each attached interface says where its pins are (``pin_dir``: the
    directory whose maps its programs count into, whichever --pin-dir made
    it; None if not pinned) and who counts it now (``owners``: the running
    tcflow processes holding its programs, or holding its pinned maps and
    named in its pinned description)."""
    rows, others = _walk_hooks()
    found = owners.survey((p for r in rows for p in r["programs"]), first=[pin_dir])
    pinned, pin_error = _entries(pin_dir)
    by_dir = {pin_dir: {(e.netns_cookie, e.ifindex): e for e in pinned}}
    for d in set(found.dirs.values()) - {pin_dir}:
        by_dir[d] = {(e.netns_cookie, e.ifindex): e for e in _entries(d)[0]}
    seen = set()
    for r in rows:
        key = (r["cookie"], r["ifindex"])
        seen.add(key)
        maps = found.maps(r["programs"])
        where = next((found.dirs[m] for m in maps if m in found.dirs), None)
        e = by_dir.get(where, {}).get(key) if where else None
        r.update(pinned=e is not None, pin_dir=where if e is not None else None,
                 since=e.attached_at if e else None, by_pid=e.pid if e else None,
                 by_pid_running=pid_alive(e.pid) if e and e.pid else None,
                 owners=[{"pid": h.pid, "command": h.command} for h in found.live
                         if h.progs & set(r["programs"]) or (e is not None and h.pid == e.pid and h.maps & maps)])
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


def _busy(what: str, holders: list[owners.Holder], fix: tuple[str, ...]) -> AttachError:
    h = holders[0]
    more = f" and {len(holders) - 1} other process{'es' if len(holders) > 2 else ''}" if len(holders) > 1 else ""
    verb = "are" if what.startswith("the pins") else "is"
    return AttachError(f"{what} {verb} being counted by a running tcflow (pid {h.pid}: {h.command}){more}",
                       hint=f"stop it first (kill {h.pid}), or `{{fix}}` to detach anyway (it then stops "
                            "counting and says so)", fix=fix)


def detach_all(pin_dir: str, force: bool = False) -> list[str]:
    """Every pinned attachment: hooks off, entries gone, then the pins.
    Refused while a running tcflow counts into these pins, unless ``force``."""
    if not _pins.verify(pin_dir):
        return [f"nothing is pinned under {pin_dir}"]
    lines = []
    with _pins.Lock(pin_dir):
        if _pins.exists(pin_dir):
            with _pins.Store(pin_dir) as store:
                live = owners.holders((), {libbpf.map_info(store.fds["counters"]).id})
                if live and not force:
                    raise _busy(f"the pins under {pin_dir}", live, ("detach", "--all", "--force"))
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


def detach_named(words: list[str], default: Where, pin_dir: str, force: bool = False) -> list[str]:
    """Remove tcflow from these interfaces (IFACE or NETNS/IFACE), pinned or
    not; error if one of them had none of it.

    Its pinned entry goes with its hooks, under whichever pin directory its
    programs count into (found through them, not only ``pin_dir``); if that
    cannot be opened, nothing is removed. An interface a running tcflow
    counts is refused, all before anything is removed, unless ``force``."""
    interfaces: list[Interface] = []
    programs: dict[tuple[int, int], list[int]] = {}
    for word in words:
        where, name = split(word, default)
        ns = _netns.resolve(where.netns, where.pid)
        ipr = _hooks.ipr_for(ns)
        try:
            interface = lookup(list_interfaces(ipr), ns, name)
            programs[(ns.cookie, interface.ifindex)] = list(_hooks.tcflow_hooks(ipr, interface.ifindex)["ids"].values())
            interfaces.append(interface)
        finally:
            ipr.close()
    found = owners.survey((p for ids in programs.values() for p in ids), first=[pin_dir])
    lines = []
    with contextlib.ExitStack() as stack:
        stores: dict[str, _pins.Store] = {}

        def store_for(d: str) -> _pins.Store:
            if d not in stores:
                stack.enter_context(_pins.Lock(d))
                stores[d] = stack.enter_context(_pins.Store(d))
            return stores[d]

        if _pins.exists(pin_dir):
            store_for(pin_dir)
        plan = []
        for interface in interfaces:
            key = (interface.netns.cookie, interface.ifindex)
            maps = found.maps(programs[key])
            d = next((found.dirs[m] for m in maps if m in found.dirs), pin_dir if pin_dir in stores else None)
            store = store_for(d) if d else None
            e = next((x for x in store.entries() if (x.netns_cookie, x.ifindex) == key), None) if store else None
            holding = [h for h in found.live if h.progs & set(programs[key])
                       or (e is not None and h.pid == e.pid and h.maps & maps)]
            if holding and not force:
                raise _busy(interface.key, holding, ("detach", "--force", interface.key))
            plan.append((interface, store, e))
        for interface, store, e in plan:
            ns = interface.netns
            path = ns.path if ns.name else "/proc/self/ns/net"
            took = _remove(path, ns.name, ns.cookie, interface.ifindex, interface.ifname,
                           e.created_clsact if e else False)
            had = bool(took and (took["xdp"] or took["tc_ingress"] or took["tc_egress"] or took["clsact"]))
            if e is not None and store is not None:
                store.remove(e)
            if not had and e is None:
                raise InterfaceError("tcflow is not attached here", ifname=interface.key,
                                     hint="`{fix}` lists where it is", fix=("status",))
            lines.append(f"detached {interface.key}"
                         + (f" (and its pin under {store.pin_dir})" if e and store and store.pin_dir != pin_dir
                            else " (and its pin)" if e else ""))
        for d, store in stores.items():
            if not store.entries():
                store.close()  # the maps are unpinned under the lock, then the lock goes
                _pins.unpin(d)
                lines.append(f"no pinned interface left: removed the pins under {d}")
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
                                 "nothing of it is attached (its interface, namespace or hooks are gone)")
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


def _counting(pin_dir: str, entries: list[_pins.Entry], counters_id: int) -> set[tuple[int, int]]:
    """The pinned entries whose interface still has tcflow's programs on
    both hooks, counting into these pins: one netlink socket per namespace."""
    out: set[tuple[int, int]] = set()
    by_ns: dict[int, list[_pins.Entry]] = {}
    for e in entries:
        by_ns.setdefault(e.netns_cookie, []).append(e)
    maps: dict[int, Optional[int]] = {}
    own = _netns.cookie_of_current()
    for cookie, group in by_ns.items():
        first = group[0]
        path = "/proc/self/ns/net" if cookie == own else _netns.find(first.netns_inode, cookie, first.netns_path)
        if path is None:
            continue
        try:
            ipr = _hooks.ipr_for(_netns.Netns("" if cookie == own else first.netns or "?", path, 0, cookie))
        except Exception:
            continue
        try:
            for e in group:
                try:
                    found = _hooks.tcflow_hooks(ipr, e.ifindex)
                except Exception:
                    continue  # the interface is gone
                ours = set()
                for hook, prog in found["ids"].items():
                    if prog not in maps:
                        maps[prog] = owners.counters_of(prog)
                    if maps[prog] == counters_id:
                        ours.add(hook)
                if "tc_egress" in ours and ours & {"xdp", "tc_ingress"}:
                    out.add((e.netns_cookie, e.ifindex))
        finally:
            ipr.close()
    return out


def read_pinned(pin_dir: str, containers: bool = False) -> Snapshot:
    """What `tcflow show` prints: the pinned counters, or with
    ``containers`` only those in a running container's namespace, with its
    identity and the totals its earlier lives carried (as `serve
    --containers --pin` reports them). An entry whose programs are gone from
    its hooks is marked as no longer counting."""
    with _pins.Store(pin_dir) as store:
        entries = store.entries()
        sums = store.counters([e.slot for e in entries])
        counters_id = int(libbpf.map_info(store.fds["counters"]).id)
    live = _counting(pin_dir, entries, counters_id)

    def hooks(e: _pins.Entry) -> Hooks:
        return dataclasses.replace(e.hooks, counting=(e.netns_cookie, e.ifindex) in live)

    if not containers:
        return make_snapshot((shown(e.ifname), shown(e.netns), e.ifindex, hooks(e), *sums[e.slot]) for e in entries)
    groups = {g.inode: g for g in scan() if not g.host_network}
    carried = CarriedTotals(pin_dir)
    out = []
    for e in entries:
        g = groups.get(e.netns_inode)
        if g is None:
            continue
        b, p = carried.plus((g.key, e.ifname), sums[e.slot])
        out.append((shown(e.ifname), shown(e.netns), e.ifindex, hooks(e), b, p, g.labels()))
    return make_snapshot(out)
