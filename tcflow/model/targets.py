"""What to watch: targets as the user names them, normalised once.

A target word is ``IFACE`` or ``NETNS/IFACE``, the same form the JSON keys
use. NETNS is an ``ip netns`` name, ``pid:N`` (that process's namespace), or a
path that opens a namespace (``/proc/N/ns/net/eth0`` splits at the last
slash). Plain words are in the namespace given by --netns/--pid, else in
tcflow's own. --match globs take the same form.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

from tcflow.model.errors import UsageError
from tcflow.model.names import parse


@dataclass(frozen=True)
class Where:
    """A namespace as the user named it: ``netns`` (name or path), ``pid``, or neither (ours)."""

    netns: Optional[str] = None
    pid: Optional[int] = None


@dataclass(frozen=True)
class Target:
    """Interfaces in one namespace: by name, by glob, and whether to follow the globs."""

    where: Where
    names: tuple[str, ...] = ()
    globs: tuple[str, ...] = ()
    follow: bool = False


def split(word: str, default: Where) -> tuple[Where, str]:
    """``NETNS/IFACE`` -> (Where, IFACE); a plain ``IFACE`` -> (default, IFACE)."""
    if "/" not in word:
        if not word:
            raise UsageError("an empty interface name", hint="name an interface, e.g. eth0 or ns1/veth0")
        return default, parse(word)
    ns, _, name = word.rpartition("/")
    if not name or not ns:
        raise UsageError(f"{word!r} is not IFACE or NETNS/IFACE", hint="e.g. veth0, ns1/veth0 or pid:4242/eth0")
    if ns.startswith("pid:"):
        pid = ns[4:]
        if not pid.isdigit() or int(pid) <= 0:
            raise UsageError(f"{ns!r} is not pid:N", hint="e.g. pid:4242/eth0")
        return Where(pid=int(pid)), parse(name)
    return Where(netns=parse(ns)), parse(name)


def group(names: Iterable[str], globs: Iterable[str], follow: bool, default: Where,
          command: str = "attach") -> list[Target]:
    """One Target per namespace, in the order they were first named; ``command``
    is the one the user ran, for the hint when nothing is named."""
    by_where: dict[Where, tuple[list[str], list[str]]] = {}
    for word in names:
        where, name = split(word, default)
        by_where.setdefault(where, ([], []))[0].append(name)
    for word in globs:
        where, glob = split(word, default)
        by_where.setdefault(where, ([], []))[1].append(glob)
    if not by_where:
        raise UsageError("no interface given", hint=f"name at least one, e.g. `tcflow {command} eth0` or "
                         f"`tcflow {command} ns1/veth0`, or give --match GLOB")
    if follow and not any(g for _, g in by_where.values()):
        raise UsageError("--follow needs --match", hint="e.g. --match 'veth*' --follow")
    return [Target(w, tuple(dict.fromkeys(n)), tuple(dict.fromkeys(g)), follow and bool(g))
            for w, (n, g) in by_where.items()]
