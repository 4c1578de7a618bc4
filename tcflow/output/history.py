"""The dashboard's history: the last WINDOW_S seconds of IP-byte rates, kept by
`tcflow serve` so that a page opened (or reloaded) now shows what came before.

Every STEP_S the serve loop hands ``record()`` a snapshot. Per interface (and
for ``ALL``, the sum of every interface), twelve series are kept: IP bytes
per second, sent and received, TCP, UDP and other, IPv4 and IPv6 (the L3
classes). Rates are float32 in one preallocated ring per interface, so memory
is fixed: 12 x 900 x 4 bytes = 43 kB an interface, at most MAX_KEYS of them
(ALL is always kept, whatever the cap; the reply says how many were left out).
An interface gone for a whole window is forgotten.

``reply()`` is the body of ``GET /history?key=K&since=T``: the points after
T, the interface list for the picker, K's cumulative totals, and with
``serve --flows`` K's busiest flows (for ``*``, the busiest of all).
"""

from __future__ import annotations

import math
import threading
from array import array
from typing import Any, Mapping, Optional

from tcflow.model.classes import CLASSES
from tcflow.model.snapshot import Snapshot, container_name

WINDOW_S = 900
STEP_S = 1.0
POINTS = int(WINDOW_S / STEP_S)
MAX_KEYS = 256            # 11 MB of rings at most
FLOWS_SHOWN = 10          # serve --flows: the busiest flows the page lists
ALL = "*"                 # the sum over every interface
SERIES: tuple[str, ...] = tuple(c.name for c in CLASSES if c.layer == "L3")  # 12: direction x protocol x family
NSER = len(SERIES)
NAN = float("nan")


class _Ring:
    __slots__ = ("rates", "last_seen")

    def __init__(self) -> None:
        self.rates = array("f", [NAN]) * (POINTS * NSER)
        self.last_seen = 0.0


class History:
    """Thread-safe: the serve loop records, HTTP workers read."""

    def __init__(self, max_keys: int = MAX_KEYS):
        self.max_keys = max_keys
        self.lock = threading.Lock()
        self.times = array("d", [NAN]) * POINTS   # wall clock of each point
        self.head = 0                              # index of the next point
        self.count = 0                             # points recorded (up to POINTS)
        self.rings: dict[str, _Ring] = {ALL: _Ring()}
        self.left_out: set[str] = set()
        self.prev_mono: Optional[float] = None
        self.prev: dict[str, tuple[int, ...]] = {}     # cumulative bytes per key at the previous sample
        self.current: dict[str, dict[str, Any]] = {}   # key -> picker entry and totals, from the last sample

    def record(self, snap: Snapshot) -> None:
        """One point: the rate of each series since the previous snapshot.
        Counters that went backwards (a re-attach) give 0, never negative."""
        with self.lock:
            dt = snap.monotonic - self.prev_mono if self.prev_mono is not None else 0.0
            self.prev_mono = snap.monotonic
            at = slice(self.head * NSER, (self.head + 1) * NSER)
            self.times[self.head] = snap.time
            gap = array("f", [NAN] * NSER)
            total = [0.0] * NSER
            all_bytes, all_packets = [0] * NSER, [0] * NSER
            current: dict[str, dict[str, Any]] = {}
            now: dict[str, tuple[int, ...]] = {}
            for key, ic in snap.interfaces.items():
                cum = now[key] = tuple(ic.bytes[n] for n in SERIES)
                pk = tuple(ic.packets[n] for n in SERIES)
                for j in range(NSER):
                    all_bytes[j] += cum[j]
                    all_packets[j] += pk[j]
                current[key] = _entry(key, ic.container, cum, pk)
                if snap.flows is not None and key in snap.flows:  # serve --flows: the busiest, for the page
                    current[key]["flows"] = snap.flows[key]["top"][:FLOWS_SHOWN]
                last = self.prev.get(key)
                rates = [max(0, c - p) / dt for c, p in zip(cum, last, strict=True)] if last and dt > 0 else None
                if rates is not None:
                    for j in range(NSER):
                        total[j] += rates[j]
                ring = self.rings.get(key)
                if ring is None and key not in self.left_out:
                    if len(self.rings) - 1 < self.max_keys:
                        ring = self.rings[key] = _Ring()
                    else:
                        self.left_out.add(key)
                if ring is not None:
                    ring.rates[at] = array("f", rates) if rates is not None else gap
                    ring.last_seen = snap.monotonic
            everything = self.rings[ALL]
            everything.rates[at] = array("f", total) if dt > 0 else gap
            everything.last_seen = snap.monotonic
            current[ALL] = _entry(ALL, None, tuple(all_bytes), tuple(all_packets))
            if snap.flows is not None:
                every = [{**f, "interface": k} for k, e in current.items() if k != ALL for f in e.get("flows", [])]
                every.sort(key=lambda f: f["rate"]["recv"] + f["rate"]["send"], reverse=True)
                current[ALL]["flows"] = every[:FLOWS_SHOWN]
            for key, ring in list(self.rings.items()):
                if key not in current:
                    ring.rates[at] = gap
                    if snap.monotonic - ring.last_seen > WINDOW_S:
                        del self.rings[key]
            self.left_out &= set(current)
            self.prev, self.current = now, current
            self.head = (self.head + 1) % POINTS
            self.count = min(self.count + 1, POINTS)

    def size(self) -> dict[str, int]:
        """For /healthz: interfaces with a ring (at most ``max``; 43 kB each),
        and how many more are left out."""
        with self.lock:
            return {"rings": len(self.rings) - (ALL in self.rings), "max": self.max_keys,
                    "left_out": len(self.left_out)}

    def reply(self, key: str, since: float = 0.0) -> dict[str, Any]:
        """Points newer than ``since`` (wall clock) for ``key``, oldest first."""
        with self.lock:
            ring = self.rings.get(key)
            order = [(self.head - self.count + k) % POINTS for k in range(self.count)]
            times: list[float] = []
            series: list[list[Optional[float]]] = [[] for _ in range(NSER)]
            for idx in order:
                t = round(self.times[idx], 3)  # as sent: the client asks again with the last one it got
                if not t > since:
                    continue
                times.append(t)
                for j in range(NSER):
                    v = ring.rates[idx * NSER + j] if ring is not None else NAN
                    series[j].append(None if math.isnan(v) else round(v, 1))
            cur = self.current.get(key)
            return {
                "key": key,
                "known": key in self.current,
                "kept": ring is not None,
                "step": STEP_S, "window": WINDOW_S,
                "times": times,
                "series": dict(zip(SERIES, series, strict=True)),
                "totals": {"bytes": cur["bytes"], "packets": cur["packets"]} if cur else None,
                "flows": cur.get("flows") if cur else None,  # None unless serve --flows
                "interfaces": [{k: v for k, v in e.items() if k not in ("bytes", "packets", "flows")}
                               for k, e in sorted(self.current.items()) if k != ALL],
                "left_out": len(self.left_out),
            }


def _entry(key: str, container: Optional[Mapping[str, str]], cum: tuple[int, ...],
           packets: tuple[int, ...]) -> dict[str, Any]:
    """What the picker shows for one key, and its totals since attach."""
    label = key
    if container:
        name = container_name(container)
        pod = container.get("pod")
        label = f"{pod}/{name}" if pod else name
        label = f"{label} ({key.rsplit('/', 1)[-1]})"
    return {"key": key, "label": label, "container": dict(container) if container else None,
            "bytes": dict(zip(SERIES, cum, strict=True)), "packets": dict(zip(SERIES, packets, strict=True))}
