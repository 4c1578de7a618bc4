"""Attach, detach and find tcflow's programs on an interface's hooks (netlink).

recv: XDP (native where the driver has it, else generic), or clsact ingress.
send: clsact egress, direct-action. Detach removes only what tcflow added: a
clsact qdisc that existed before stays, with its other filters, and an XDP
program is removed only if it is still the one tcflow put there.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from typing import Any, Optional

from pyroute2 import IPRoute

from tcflow.bpf import libbpf
from tcflow.host import journal, owners
from tcflow.host.interfaces import Interface
from tcflow.model.errors import AttachError, InterfaceError, PermissionError_
from tcflow.system.netns import Netns, run_in

XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2
XDP_FLAGS_REPLACE = 1 << 4
XDP_MODE_FLAGS = {"native": XDP_FLAGS_DRV_MODE, "generic": XDP_FLAGS_SKB_MODE}

TC_INGRESS = 0xFFFFFFF2  # ffff:fff2, clsact ingress
TC_EGRESS = 0xFFFFFFF3   # ffff:fff3, clsact egress
# tcflow's filters: their own handle and priority, so that they never collide
# with a filter someone else added, and detach can name exactly them. Filters
# with a lower prio run first; a packet one of them drops is not counted.
TC_HANDLE = 0x7CF1
TC_PRIO = 1999
TC_NAME_INGRESS = "tcflow_ingress"
TC_NAME_EGRESS = "tcflow_egress"


NETLINK_ROUTE = 0


def ipr_for(ns: Netns) -> Any:
    """An IPRoute in ``ns``.

    pyroute2's own ``netns=`` forks a child process per socket (and signals
    it); tcflow makes the netlink socket in a thread that entered the
    namespace instead (a socket stays in the namespace it was made in), and
    hands pyroute2 its fd. Never creates a namespace by accident."""
    # groups=0: no multicast subscription. pyroute2 subscribes by default,
    # and link events would then pile up in a socket that only sends requests
    # (under churn: ENOBUFS on the next request). Watch has its own event socket.
    if not ns.name:
        return IPRoute(groups=0)
    sock = run_in(ns.path, lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC,
                                                 NETLINK_ROUTE))
    return IPRoute(fileno=sock.detach(), groups=0)


def _code(e: Exception) -> int:
    return int(getattr(e, "code", 0) or getattr(e, "errno", 0) or 0)


def _words(e: Exception) -> str:
    """A netlink error in words ("No such device"), not as a Python tuple."""
    code = _code(e)
    return os.strerror(code) if code else str(e)


def _gone(interface: Interface) -> InterfaceError:
    return InterfaceError(f"{interface.key} disappeared while tcflow was attaching to it",
                          hint="nothing to do; with --follow it is attached again if it comes back")


def xdp_state(ipr: Any, ifindex: int) -> tuple[Optional[int], Optional[str]]:
    """(program id, mode) of the XDP program on a link, or (None, None)."""
    msg = ipr.link("get", index=ifindex)[0]
    xdp = msg.get_attr("IFLA_XDP")
    if xdp is None:
        return None, None
    mode = xdp.get_attr("IFLA_XDP_ATTACHED")
    pid = xdp.get_attr("IFLA_XDP_PROG_ID")
    if not mode:
        return None, None
    return pid, {"xdp": "native", "xdpgeneric": "generic", "xdpoffload": "offload"}.get(mode, mode)


def prog_name(prog_id: Optional[int]) -> str:
    """The name the kernel holds for a BPF program id, best effort."""
    if not prog_id:
        return "?"
    try:
        fd = libbpf.prog_fd_by_id(prog_id)
    except Exception:
        return "?"
    try:
        return libbpf.prog_info(fd).name.decode(errors="replace") or "?"
    except Exception:
        return "?"
    finally:
        os.close(fd)


# The kernel keeps 15 characters of a program's name.
TCFLOW_PROG_NAMES = ("tcflow_xdp", "tcflow_tc_ingre", "tcflow_tc_egres")


class NativeRefused(AttachError):
    """The driver (or the device) would not take native XDP."""


def _already_tcflow(ipr: Any, interface: Interface) -> AttachError:
    """The error for an interface another tcflow holds: its pid if it runs
    (then detaching it is not the fix), else how to remove what was left."""
    try:
        ids = list(tcflow_hooks(ipr, interface.ifindex)["ids"].values())
        live = owners.holders(ids, {c for c in map(owners.counters_of, ids) if c})
    except Exception:
        live = []
    if live:
        return AttachError(f"{interface.key} is already counted by a running tcflow (pid {live[0].pid}: "
                           f"{live[0].command})", hint="read its output, or stop it first; `{fix}` says who counts "
                           "what", fix=("status",))
    return AttachError(f"{interface.key} already has tcflow attached (a pinned tcflow, or one that was "
                       "killed)", hint="see `tcflow status`; `{fix}` removes it", fix=("detach", interface.key))


def attach_xdp(ipr: Any, interface: Interface, prog_fd: int, mode: str = "auto") -> str:
    """Attach XDP, never over another program. Returns the mode used.

    With mode "native", a driver that refuses raises NativeRefused, so that
    the caller can fall back to clsact ingress.
    """
    prog_id, _ = xdp_state(ipr, interface.ifindex)
    if prog_id:
        name = prog_name(prog_id)
        if name in TCFLOW_PROG_NAMES:
            raise _already_tcflow(ipr, interface)
        raise AttachError(
            f"{interface.key} already has an XDP program ({name}, id {prog_id})",
            ifname=interface.key,
            hint="tcflow does not replace it; use --ingress tc to count on clsact ingress instead",
        )
    tries = ["native", "generic"] if mode == "auto" else [mode]
    last: Optional[Exception] = None
    for m in tries:
        flags = XDP_MODE_FLAGS[m] | XDP_FLAGS_UPDATE_IF_NOEXIST
        try:
            ipr.link("set", index=interface.ifindex,
                     xdp={"attrs": [("IFLA_XDP_FD", prog_fd), ("IFLA_XDP_FLAGS", flags)]})
        except Exception as e:  # NetlinkError
            last = e
            if _code(e) == errno.EPERM:
                raise PermissionError_("attaching XDP needs root", hint="run tcflow with sudo") from None
            if _code(e) == errno.ENODEV:
                raise _gone(interface) from None
            if _code(e) == errno.EBUSY:
                prog_id, _ = xdp_state(ipr, interface.ifindex)
                raise AttachError(f"{interface.key} already has an XDP program ({prog_name(prog_id)})",
                                  ifname=interface.key, hint="use --ingress tc") from None
            continue
        interface.attachment.xdp_mode = m
        interface.attachment.attached["xdp"] = True
        return m
    if mode == "native":
        raise NativeRefused(f"the driver refused native XDP: {_words(last) if last else '?'}", ifname=interface.key,
                            hint="use --xdp-mode generic, or --ingress tc")
    raise AttachError(f"could not attach XDP ({mode}): {_words(last) if last else '?'}", ifname=interface.key,
                      hint="try --xdp-mode generic or --ingress tc")


def tcflow_hooks(ipr: Any, ifindex: int) -> dict[str, Any]:
    """Which of tcflow's hooks are on a link, and everything else found there.

    ``xdp``/``xdp_mode``/``xdp_id``: tcflow's XDP program; ``tc_ingress`` and
    ``tc_egress``: tcflow's filters; ``ids``: the kernel's id of each of
    tcflow's programs found, by hook; ``others``: (hook, description) of any
    other program on the same hooks.
    """
    out: dict[str, Any] = {"xdp": False, "xdp_mode": None, "xdp_id": None,
                           "tc_ingress": False, "tc_egress": False, "ids": {}, "others": []}
    prog_id, mode = xdp_state(ipr, ifindex)
    if prog_id:
        name = prog_name(prog_id)
        if name == "tcflow_xdp":
            out.update(xdp=True, xdp_mode=mode, xdp_id=prog_id)
            out["ids"]["xdp"] = prog_id
        else:
            out["others"].append(("xdp", f"XDP {name} (id {prog_id}, {mode})"))
    for hook, parent, ours in (("ingress", TC_INGRESS, TC_NAME_INGRESS), ("egress", TC_EGRESS, TC_NAME_EGRESS)):
        for f in filters(ipr, ifindex, parent):
            if f["handle"] == TC_HANDLE and f["prio"] == TC_PRIO and f["name"] == ours:
                out[f"tc_{hook}"] = True
                if f["id"]:
                    out["ids"][f"tc_{hook}"] = f["id"]
            else:
                out["others"].append((hook, f"tc {hook} {f['kind']} {f['name'] or ''} "
                                            f"(prio {f['prio']}, handle {f['handle']:#x})".replace("  ", " ")))
    return out


def remove_found(ipr: Any, interface: Interface, created_clsact: bool) -> dict[str, Any]:
    """Remove whatever tcflow hooks are on ``interface``, whoever attached them.

    For `tcflow detach`, which holds no program fds. Returns what was found.
    """
    found = tcflow_hooks(ipr, interface.ifindex)
    interface.attachment.attached = {k: found[k] for k in ("tc_ingress", "tc_egress", "xdp")}
    interface.attachment.xdp_mode = found["xdp_mode"]
    interface.attachment.created_clsact = created_clsact
    errors = detach(ipr, interface)
    if errors:
        raise errors[0]
    return found


def detach(ipr: Any, interface: Interface, xdp_fd: Optional[int] = None) -> list[Exception]:
    """The one detach sequence: tc egress, tc ingress, XDP, then the clsact
    qdisc if tcflow made it and nothing else uses it. Every step is tried;
    the errors are returned. The XDP program is removed only if it is still
    tcflow's: ``xdp_fd``, or the program found on the link by id."""
    errors: list[Exception] = []
    for step in (lambda: detach_tc(ipr, interface, "egress"), lambda: detach_tc(ipr, interface, "ingress"),
                 lambda: _detach_xdp_found(ipr, interface, xdp_fd), lambda: drop_clsact_if_ours(ipr, interface)):
        try:
            step()
        except Exception as e:  # keep detaching the rest
            errors.append(e)
    return errors


def _detach_xdp_found(ipr: Any, interface: Interface, xdp_fd: Optional[int]) -> None:
    if not interface.attachment.attached.get("xdp"):
        return
    if xdp_fd is not None:
        detach_xdp(ipr, interface, xdp_fd)
        return
    prog_id, _ = xdp_state(ipr, interface.ifindex)
    if not prog_id or prog_name(prog_id) != "tcflow_xdp":
        interface.attachment.attached["xdp"] = False  # gone, or someone else's now: leave it
        return
    fd = libbpf.prog_fd_by_id(prog_id)
    try:
        detach_xdp(ipr, interface, fd)
    finally:
        os.close(fd)


def detach_xdp(ipr: Any, interface: Interface, prog_fd: int) -> None:
    """Remove our XDP program; if someone replaced it meanwhile, leave theirs."""
    if not interface.attachment.attached.get("xdp"):
        return
    flags = XDP_MODE_FLAGS.get(interface.attachment.xdp_mode or "", 0) | XDP_FLAGS_REPLACE
    try:
        ipr.link("set", index=interface.ifindex,
                 xdp={"attrs": [("IFLA_XDP_FD", -1), ("IFLA_XDP_FLAGS", flags),
                                ("IFLA_XDP_EXPECTED_FD", prog_fd)]})
    except Exception as e:
        if _code(e) not in (errno.ENODEV, errno.EEXIST, errno.ENOENT):
            raise
    interface.attachment.attached["xdp"] = False


def _ensure_clsact(ipr: Any, interface: Interface) -> None:
    """A clsact qdisc on the link: tcflow's if it had to add it (noted in the
    journal first, so that even a kill -9 right after cannot lose that)."""
    cookie = interface.netns.cookie
    # Noted first, and the note taken back if the qdisc was there already
    # (EEXIST) - unless the note was there before this call: then a killed
    # tcflow made that qdisc, and it stays tcflow's. (Asking the kernel first
    # would cost a dump of every qdisc per interface: quadratic.)
    noted_before = journal.made(cookie, interface.ifindex)
    if not noted_before:
        journal.note(cookie, interface.ifindex)
    try:
        ipr.tc("add", "clsact", interface.ifindex)
        interface.attachment.created_clsact = True
    except Exception as e:
        if not noted_before:
            journal.forget(cookie, interface.ifindex)  # not made by tcflow after all
        if _code(e) == errno.EEXIST:
            return
        if _code(e) == errno.EPERM:
            raise PermissionError_("adding a clsact qdisc needs root", hint="run tcflow with sudo") from None
        if _code(e) == errno.ENODEV:
            raise _gone(interface) from None
        raise AttachError(f"could not add a clsact qdisc: {_words(e)}", ifname=interface.key,
                          hint="check that the kernel has CONFIG_NET_SCH_INGRESS") from None


def filters(ipr: Any, ifindex: int, parent: int) -> list[dict[str, Any]]:
    """The filters on one clsact hook, as plain dicts (handle, prio, kind, name)."""
    out: list[dict[str, Any]] = []
    try:
        msgs = ipr.get_filters(index=ifindex, parent=parent)
    except Exception:
        return out
    for m in msgs:
        if not m.get("handle"):
            continue  # the per-priority header entry
        opts = m.get_attr("TCA_OPTIONS")
        name = opts.get_attr("TCA_BPF_NAME") if opts is not None else None
        out.append({"handle": m["handle"], "prio": m["info"] >> 16,
                    "kind": m.get_attr("TCA_KIND"), "name": name,
                    "id": _bpf_id(opts) if opts is not None else None})
    return out


TCA_BPF_ID = 11  # linux/pkt_cls.h; pyroute2 leaves it undecoded ("UNKNOWN")


def _bpf_id(opts: Any) -> Optional[int]:
    """The program id a bpf filter runs (the kernel reports it; pyroute2 does not decode it)."""
    for name, nla in opts.get("attrs", []):
        if name == "TCA_BPF_ID" and isinstance(nla, int):
            return nla
        if name == "UNKNOWN" and getattr(nla, "get", None) and nla.get("header", {}).get("type") == TCA_BPF_ID \
                and nla["header"].get("length") == 8:
            return int(struct.unpack_from("=I", nla.data, nla.offset + 4)[0])
    return None


def attach_tc(ipr: Any, interface: Interface, prog_fd: int, hook: str) -> None:
    parent, name = (TC_EGRESS, TC_NAME_EGRESS) if hook == "egress" else (TC_INGRESS, TC_NAME_INGRESS)
    _ensure_clsact(ipr, interface)
    try:
        ipr.tc("add-filter", "bpf", interface.ifindex, TC_HANDLE, fd=prog_fd, name=name,
               parent=parent, prio=TC_PRIO, direct_action=True)
    except Exception as e:
        if _code(e) == errno.EEXIST:
            raise _already_tcflow(ipr, interface) from None
        if _code(e) == errno.EPERM:
            raise PermissionError_("adding a tc filter needs root", hint="run tcflow with sudo") from None
        if _code(e) == errno.ENODEV:
            raise _gone(interface) from None
        raise AttachError(f"could not add the {hook} filter: {_words(e)}", ifname=interface.key) from None
    interface.attachment.attached[f"tc_{hook}"] = True


def detach_tc(ipr: Any, interface: Interface, hook: str) -> None:
    if not interface.attachment.attached.get(f"tc_{hook}"):
        return
    parent = TC_EGRESS if hook == "egress" else TC_INGRESS
    try:
        ipr.tc("del-filter", "bpf", interface.ifindex, TC_HANDLE, parent=parent, prio=TC_PRIO)
    except Exception as e:
        if _code(e) not in (errno.ENODEV, errno.ENOENT, errno.EINVAL):
            raise
    interface.attachment.attached[f"tc_{hook}"] = False


def drop_clsact_if_ours(ipr: Any, interface: Interface) -> None:
    """Remove the clsact qdisc only if tcflow made it and nobody else uses it."""
    if not (interface.attachment.created_clsact or journal.made(interface.netns.cookie, interface.ifindex)):
        return
    if filters(ipr, interface.ifindex, TC_INGRESS) or filters(ipr, interface.ifindex, TC_EGRESS):
        return
    try:
        ipr.tc("del", "clsact", interface.ifindex)
    except Exception as e:
        if _code(e) not in (errno.ENODEV, errno.ENOENT, errno.EINVAL):
            raise
    journal.forget(interface.netns.cookie, interface.ifindex)
    interface.attachment.created_clsact = False


def has_clsact(ipr: Any, ifindex: int) -> bool:
    """For `tcflow detach` only: a dump of every qdisc in the namespace."""
    return any(q["index"] == ifindex and q.get_attr("TCA_KIND") == "clsact" for q in ipr.get_qdiscs(index=ifindex))
