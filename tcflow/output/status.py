"""`tcflow status` as a table: what tcflow has attached (engine/status.py
collects it) and, with --containers, every container (containers/status.py)."""

from __future__ import annotations

import time
from typing import Any


def render_status(r: dict[str, Any]) -> str:
    out = []
    if r["attached"]:
        out.append(f"{'NETNS':<16} {'IFACE':<15} {'RECV':<14} {'SEND':<4} {'PINNED':<6} {'COUNTED BY':<12} SINCE")
        for a in r["attached"]:
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(a["since"])) if a["since"] else "-"
            pinned = ("yes" if a["pin_dir"] == r["pin_dir"] else "yes*") if a["pinned"] else "no"
            owner = ("pid " + ",".join(str(o["pid"]) for o in a["owners"])) if a["owners"] else \
                ("the kernel" if a["pinned"] else "nobody")
            line = (f"{a['netns'][:16]:<16} {a['interface']:<15} {a['recv']:<14} {a['send']:<4} {pinned:<6} "
                    f"{owner:<12} {since}")
            if not a["complete"]:
                line += "  INCOMPLETE: a hook was removed by hand; `tcflow detach` it"
            out.append(line)
        legend = []
        if any(a["owners"] for a in r["attached"]):
            legend.append("pid N: a running tcflow counts it ("
                          + "; ".join(sorted({f"{o['pid']}: {o['command']}" for a in r["attached"]
                                              for o in a["owners"]})) + "); `tcflow detach` refuses it while it runs.")
        if any(a["pinned"] and not a["owners"] for a in r["attached"]):
            legend.append("the kernel: pinned, counting with no process; `tcflow show` reads it.")
        elsewhere = sorted({a["pin_dir"] for a in r["attached"] if a["pinned"] and a["pin_dir"] != r["pin_dir"]})
        if elsewhere:
            legend.append("yes*: pinned under " + ", ".join(elsewhere) + " (give that --pin-dir to `tcflow show`).")
        orphans = [a for a in r["attached"] if not a["pinned"] and not a["owners"]]
        if orphans:
            legend.append(f"nobody: {len(orphans)} left by a tcflow that was killed; `tcflow detach NETNS/IFACE` "
                          "removes one.")
        if legend:
            out.append("")
            out.extend(legend)
    else:
        out.append("tcflow is not attached to any interface.")
    if r["other_programs"]:
        out.append("")
        out.append("other programs on the same hooks:")
        for o in r["other_programs"]:
            out.append(f"  {o['netns']}/{o['interface']}: {o['program']}")
    if r["stale_pins"]:
        out.append("")
        out.append("pinned entries with nothing attached: interface, namespace or hooks gone "
                   "(`tcflow detach --stale` clears them): "
                   + ", ".join(f"{s['netns']}/{s['interface']}" for s in r["stale_pins"]))
    if r["pin_error"]:
        out.append(f"\npins under {r['pin_dir']}: {r['pin_error']}")
    elif r["pinned"]:
        out.append(f"\npins: {r['pin_dir']} ({r['pinned']} interface{'s' if r['pinned'] != 1 else ''})")
    return "\n".join(out)


def render_containers(r: dict[str, Any]) -> str:
    if not r["containers"]:
        return "no running container found (Docker, containerd, CRI-O, Podman, LXC, systemd-nspawn)"
    lines = [f"{'CONTAINER':<28} {'RUNTIME':<10} {'ID':<12} {'IFACE':<10} {'HOST SIDE':<16} COUNTED"]
    for c in r["containers"]:
        cid = c["container_id"].split(",")[0][:12]
        if c["host_network"]:
            lines.append(f"{c['name'][:28]:<28} {c['runtime']:<10} {cid:<12} {'(host network: the host'}'s "
                         "interfaces; attach them by name)")
            continue
        if not c["interfaces"]:
            lines.append(f"{c['name'][:28]:<28} {c['runtime']:<10} {cid:<12} -")
        for i in c["interfaces"]:
            host_side = i["host_side"] or (f"ifindex {i['peer_ifindex']}" if i["peer_ifindex"] else "-")
            lines.append(f"{c['name'][:28]:<28} {c['runtime']:<10} {cid:<12} {i['interface']:<10} "
                         f"{host_side:<16} {'yes' if i['counted'] else 'no'}")
    return "\n".join(lines)
