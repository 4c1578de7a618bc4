"""Prometheus exposition of a Snapshot, through prometheus_client.

A custom collector: every scrape calls ``snapshot()`` (one batch map read),
and nothing polls in the background. Plain data in: the collector never
touches bcc or pyroute2 itself.

Metrics (all counters, base units):
  tcflow_bytes_total / tcflow_packets_total
      {interface, netns, direction, family, protocol, layer}
      the 20 per-family classes: layer "l4" (payload) or "l3" (IP bytes),
      protocol "tcp", "udp" or "other" (L3 of any other IP protocol)
  tcflow_excluded_bytes_total / tcflow_excluded_packets_total
      {interface, netns, direction, reason}: what SPEC keeps out of the
      classes, reason "non_ip", "local" or "malformed"
  tcflow_program_runs_total / tcflow_program_run_seconds_total {program}
      tcflow's own cost, from the kernel's BPF run-time statistics
  tcflow_interfaces: how many interfaces are attached (a gauge)
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping, Optional

from ..classes import CLASSES
from ..counters import Snapshot

LABELS = ["interface", "netns", "direction", "family", "protocol", "layer"]
EXCLUDED_LABELS = ["interface", "netns", "direction", "reason"]
REASONS = {"OTHER": "non_ip", "LOCAL": "local", "MALFORMED": "malformed"}


def _class_labels() -> dict[str, tuple[str, str, str, str]]:
    out = {}
    for c in CLASSES:
        if c.layer is None:
            continue
        proto = "other" if c.protocol == "raw" else str(c.protocol)
        out[c.name] = (c.direction, str(c.family), proto, c.layer.lower())
    return out


CLASS_LABELS = _class_labels()


class TcflowCollector:
    """Register with a prometheus_client CollectorRegistry.

    ``snapshot`` returns the current Snapshot; ``program_stats`` (optional)
    returns {program name: (run count, run time in ns)}.
    """

    def __init__(self, snapshot: Callable[[], Snapshot],
                 program_stats: Optional[Callable[[], Mapping[str, tuple[int, int]]]] = None):
        self.snapshot = snapshot
        self.program_stats = program_stats

    def describe(self) -> list[Any]:
        return []  # metrics are known only at scrape time; skip the registration-time collect

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        snap = self.snapshot()
        b = CounterMetricFamily("tcflow_bytes", "Bytes by class: L4 = TCP/UDP payload, L3 = IP bytes "
                                "(GSO aggregates expanded to the packets they stand for)", labels=LABELS)
        p = CounterMetricFamily("tcflow_packets", "Packets by class (GSO aggregates count their segments)",
                                labels=LABELS)
        xb = CounterMetricFamily("tcflow_excluded_bytes", "Bytes kept out of the classes (SPEC): non-IP "
                                 "frames, local (loopback or src == dst) and malformed packets",
                                 labels=EXCLUDED_LABELS)
        xp = CounterMetricFamily("tcflow_excluded_packets", "Packets kept out of the classes", labels=EXCLUDED_LABELS)
        for ic in snap.interfaces.values():
            netns = ic.netns or ""
            for name, labels in CLASS_LABELS.items():
                b.add_metric([ic.ifname, netns, *labels], ic.bytes[name])
                p.add_metric([ic.ifname, netns, *labels], ic.packets[name])
            for kind, reason in REASONS.items():
                for direction in ("recv", "send"):
                    name = f"{kind}_{direction.upper()}"
                    xb.add_metric([ic.ifname, netns, direction, reason], ic.bytes[name])
                    xp.add_metric([ic.ifname, netns, direction, reason], ic.packets[name])
        yield from (b, p, xb, xp)
        g = GaugeMetricFamily("tcflow_interfaces", "Interfaces tcflow is attached to")
        g.add_metric([], len(snap.interfaces))
        yield g
        if self.program_stats is not None:
            runs = CounterMetricFamily("tcflow_program_runs", "Runs of tcflow's BPF programs (kernel BPF "
                                       "statistics, enabled while tcflow serves)", labels=["program"])
            secs = CounterMetricFamily("tcflow_program_run_seconds", "Time spent in tcflow's BPF programs",
                                       labels=["program"])
            for prog, (cnt, ns) in sorted(self.program_stats().items()):
                runs.add_metric([prog], cnt)
                secs.add_metric([prog], ns / 1e9)
            yield runs
            yield secs


def render(collector: TcflowCollector) -> bytes:
    """The text exposition format for one scrape."""
    from prometheus_client import CollectorRegistry, generate_latest

    reg = CollectorRegistry(auto_describe=False)
    reg.register(collector)  # type: ignore[arg-type]
    return generate_latest(reg)
