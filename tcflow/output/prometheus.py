"""Prometheus exposition of a Snapshot, through prometheus_client.

A custom collector: every scrape calls ``snapshot()`` (one batch map read),
and nothing polls in the background. Plain data in: the collector never
touches bcc or pyroute2 itself.

Families (every sum over a family's labels means something; node_exporter's
naming, ``device`` for the interface):
  tcflow_ip_bytes_total       {device, netns, direction, family, protocol}
      IP bytes (L3 classes), GSO aggregates expanded to their wire packets
  tcflow_payload_bytes_total  {device, netns, direction, family, protocol}
      TCP/UDP payload bytes (L4 classes); protocol "tcp" or "udp"
  tcflow_packets_total        {device, netns, direction, family, protocol}
      IP packets (counted with the L3 classes: one per packet)
  tcflow_excluded_bytes_total / tcflow_excluded_packets_total
      {device, netns, direction, reason}: what docs/SPEC.md keeps out of the
      classes, reason "non_ip", "local" or "malformed"
  Every family above also carries {container_id, container, runtime, pod,
  namespace}: a container's identity (``--containers``), empty otherwise;
  for a pod, its containers' ids and names joined with ",".
  tcflow_program_runs_total / tcflow_program_run_seconds_total {program}
      tcflow's own cost, from the kernel's BPF run-time statistics
  tcflow_interfaces            interfaces attached (gauge)
  tcflow_interface_slots / tcflow_interface_slots_used
                               the interface map's size and what is in use (gauges)
  tcflow_attach_errors_total   interfaces that matched --follow but could not be attached
  tcflow_build_info            {version, python} = 1
  With --flows, no series per flow unless asked (cardinality), only:
  tcflow_flows                 {device, netns, container labels}: flows in the table
  tcflow_flow_evictions_total  {device, ...}: flows taken out (idle, or a nearly full table)
  tcflow_flow_overflow_bytes_total {device, ..., direction}: IP bytes counted while the table was full
  tcflow_flow_table_entries / tcflow_flow_table_capacity: the whole table
  tcflow_flow_table_read_age_seconds: how old the flow table's read is (serve
      reuses the loop's once-a-second read rather than read per scrape)
  and, with serve --metrics-top-flows N, at most N flows per interface:
  tcflow_flow_ip_bytes_total   {device, netns, direction, protocol, local, remote}
plus prometheus_client's process_* and python_* families.
"""

from __future__ import annotations

import platform
import threading
from typing import Any, Callable, Iterator, Mapping, Optional

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.utils import floatToGoString

from tcflow.model.classes import CLASSES
from tcflow.model.snapshot import Snapshot
from tcflow.model.version import __version__

CONTAINER_LABELS = ["container_id", "container", "runtime", "pod", "namespace"]  # "" when not a container
LABELS = ["device", "netns", "direction", "family", "protocol", *CONTAINER_LABELS]
EXCLUDED_LABELS = ["device", "netns", "direction", "reason", *CONTAINER_LABELS]
SPEC = "docs/SPEC.md"


class TcflowCollector:
    """Register with a prometheus_client CollectorRegistry.

    ``snapshot`` returns the current Snapshot; ``program_stats`` (optional)
    returns {program name: (run count, run time in ns)}.
    """

    def __init__(self, snapshot: Callable[[], Snapshot],
                 program_stats: Optional[Callable[[], Mapping[str, tuple[int, int]]]] = None,
                 health: Optional[Callable[[], Mapping[str, Any]]] = None, top_flows: int = 0):
        self.snapshot = snapshot
        self.top_flows = top_flows
        self.program_stats = program_stats
        self.health = health

    def describe(self) -> list[Any]:
        return []  # metrics are known only at scrape time; skip the registration-time collect

    def collect(self) -> Iterator[Any]:
        snap = self.snapshot()
        yield from self.class_families(snap)
        yield from self.other_families(snap)

    def class_families(self, snap: Snapshot) -> Iterator[Any]:
        """The five families with a series per interface and class (what
        render() writes by hand: they are nearly all of a scrape)."""
        ip = CounterMetricFamily("tcflow_ip_bytes", f"IP bytes (header and payload) by class, {SPEC}; GSO "
                                 "aggregates count as the packets they stand for", labels=LABELS)
        pl = CounterMetricFamily("tcflow_payload_bytes", f"TCP and UDP payload bytes, {SPEC}", labels=LABELS)
        pk = CounterMetricFamily("tcflow_packets", "IP packets (GSO aggregates count their segments)",
                                 labels=LABELS)
        xb = CounterMetricFamily("tcflow_excluded_bytes", f"Bytes kept out of the classes ({SPEC}): non-IP "
                                 "frames, local (loopback or src == dst) and malformed packets",
                                 labels=EXCLUDED_LABELS)
        xp = CounterMetricFamily("tcflow_excluded_packets", "Packets kept out of the classes",
                                 labels=EXCLUDED_LABELS)
        for ic in snap.interfaces.values():
            who = [(ic.container or {}).get(k, "") for k in CONTAINER_LABELS]
            for c in CLASSES:
                if c.layer is None:
                    labels = [ic.ifname, ic.netns, c.direction, str(c.reason), *who]
                    xb.add_metric(labels, ic.bytes[c.name])
                    xp.add_metric(labels, ic.packets[c.name])
                    continue
                labels = [ic.ifname, ic.netns, c.direction, str(c.family), c.protocol_label, *who]
                if c.layer == "L4":
                    pl.add_metric(labels, ic.bytes[c.name])
                else:
                    ip.add_metric(labels, ic.bytes[c.name])
                    pk.add_metric(labels, ic.packets[c.name])
        yield from (ip, pl, pk, xb, xp)

    def other_families(self, snap: Snapshot) -> Iterator[Any]:
        if snap.flows is not None:
            yield from self._flows(snap)
        g = GaugeMetricFamily("tcflow_interfaces", "Interfaces tcflow is attached to")
        g.add_metric([], len(snap.interfaces))
        yield g
        if self.health is not None:
            h = self.health()
            yield GaugeMetricFamily("tcflow_interface_slots", "Interfaces the maps can hold (--max-interfaces)",
                                    value=h["slots"])
            yield GaugeMetricFamily("tcflow_interface_slots_used", "Interface slots in use", value=h["slots_used"])
            yield CounterMetricFamily("tcflow_attach_errors", "Interfaces that matched but could not be attached",
                                      value=h["attach_errors"])
        info = GaugeMetricFamily("tcflow_build_info", "tcflow's version, and the Python it runs on (always 1)",
                                 labels=["version", "python"])
        info.add_metric([__version__, platform.python_version()], 1)
        yield info
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


    def _flows(self, snap: Snapshot) -> Iterator[Any]:
        n = CounterMetricFamily("tcflow_flow_evictions", "Flows taken out of the flow table (idle, or the table "
                                "nearly full); their bytes stay in the interface's evicted totals",
                                labels=FLOW_LABELS)
        active = GaugeMetricFamily("tcflow_flows", "Flows in the flow table", labels=FLOW_LABELS)
        over = CounterMetricFamily("tcflow_flow_overflow_bytes", "IP bytes of flows that found the flow table "
                                   "full (counted, but in no flow)", labels=[*FLOW_LABELS, "direction"])
        top = CounterMetricFamily("tcflow_flow_ip_bytes", "IP bytes of the busiest flows (serve "
                                  "--metrics-top-flows): series come and go with the flows",
                                  labels=["device", "netns", "direction", "protocol", "local", "remote"])
        entries = capacity = 0
        age = 0.0
        for key, ic in snap.interfaces.items():
            doc = snap.flows.get(key) if snap.flows else None
            if doc is None:
                continue
            labels = [ic.ifname, ic.netns, *[(ic.container or {}).get(k, "") for k in CONTAINER_LABELS]]
            active.add_metric(labels, doc["active"])
            n.add_metric(labels, doc["evictions"])
            for d in ("recv", "send"):
                over.add_metric([*labels, d], doc["overflow"]["ip_bytes"][d])
            entries, capacity = doc["table"]["entries"], doc["table"]["capacity"]
            age = max(age, doc.get("read_age_s", 0.0))
            for f in doc["top"][:self.top_flows]:
                proto = f["protocol"] if f["icmp_type"] is None else f"{f['protocol']}/{f['icmp_type']}"
                ends = [_end(f["local"]), _end(f["remote"])]
                for d in ("recv", "send"):
                    top.add_metric([ic.ifname, ic.netns, d, proto, *ends], f["ip_bytes"][d])
        yield from (active, n, over)
        yield GaugeMetricFamily("tcflow_flow_table_entries", "Entries in the flow table, all interfaces",
                                value=entries)
        yield GaugeMetricFamily("tcflow_flow_table_capacity", "Flows the table holds (--flow-entries)",
                                value=capacity)
        yield GaugeMetricFamily("tcflow_flow_table_read_age_seconds", "How old the read of the flow table these "
                                "flow series come from is (serve shares the loop's once-a-second read)", value=age)
        if self.top_flows:
            yield top


def _end(e: Mapping[str, Any]) -> str:
    return e["address"] if e["port"] is None else f"{e['address']}:{e['port']}" if ":" not in e["address"] \
        else f"[{e['address']}]:{e['port']}"


FLOW_LABELS = ["device", "netns", *CONTAINER_LABELS]


class _Held:
    """The families other than the per-class ones, of the snapshot render() read."""

    def __init__(self) -> None:
        self.families: list[Any] = []

    def collect(self) -> Iterator[Any]:
        return iter(self.families)


class Registry(CollectorRegistry):
    """tcflow's registry: ``collector`` and the families render() leaves to
    prometheus_client (``rest``: the other tcflow families, process_*,
    python_*)."""

    def __init__(self, collector: TcflowCollector):
        super().__init__(auto_describe=False)
        self.collector = collector
        self.register(collector)  # type: ignore[arg-type]
        ProcessCollector(registry=self)
        PlatformCollector(registry=self)
        self.held = _Held()
        self.rest = CollectorRegistry(auto_describe=False)
        self.rest.register(self.held)  # type: ignore[arg-type]
        ProcessCollector(registry=self.rest)
        PlatformCollector(registry=self.rest)
        self.lock = threading.Lock()


def registry(collector: TcflowCollector) -> Registry:
    """tcflow's families plus the standard process and platform ones."""
    return Registry(collector)


def render(reg: CollectorRegistry) -> bytes:
    """The text exposition format for one scrape, exactly what
    prometheus_client's generate_latest() gives (a test holds them equal),
    but the per-class families are written here from templates made once:
    with 200 containers they are some 10,000 series, and prometheus_client
    formats each label of each series (its cost was most of a scrape)."""
    if not isinstance(reg, Registry):
        return generate_latest(reg)
    with reg.lock:
        snap = reg.collector.snapshot()
        reg.held.families = list(reg.collector.other_families(snap))
        try:
            rest = generate_latest(reg.rest)
        finally:
            reg.held.families = []
    return class_text(snap).encode() + rest


def _escape(v: str) -> str:
    return v.replace("\\", r"\\").replace("\n", r"\n").replace('"', r'\"')


def _family_head(name: str, doc: str) -> str:
    doc = doc.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {name}_total {doc}\n# TYPE {name}_total counter\n"


def _templates() -> list[tuple[str, str, str, str]]:
    """Per class: (family, "bytes" or "packets", line template, ...): one line
    per (class, measure) with the interface's labels as {0}..{6} (device,
    netns, then CONTAINER_LABELS), every label in name order as
    prometheus_client writes them."""
    out = []
    fams: tuple[tuple[str, str], ...]
    for c in CLASSES:
        if c.layer is None:
            fixed = {"direction": c.direction, "reason": str(c.reason)}
            fams = (("tcflow_excluded_bytes", "bytes"), ("tcflow_excluded_packets", "packets"))
        else:
            fixed = {"direction": c.direction, "family": str(c.family), "protocol": c.protocol_label}
            fams = ((("tcflow_payload_bytes", "bytes"),) if c.layer == "L4" else
                    (("tcflow_ip_bytes", "bytes"), ("tcflow_packets", "packets")))
        slots = {name: "{%d}" % i for i, name in enumerate(["device", "netns", *CONTAINER_LABELS])}
        labels = {**{k: f'"{slots[k]}"' for k in slots}, **{k: '"%s"' % _escape(v).replace("{", "{{").replace(
            "}", "}}") for k, v in fixed.items()}}
        body = ",".join(f"{k}={labels[k]}" for k in sorted(labels))
        for fam, measure in fams:
            out.append((fam, measure, c.name, f"{fam}_total{{{{{body}}}}} "))
    return out


_TEMPLATES = _templates()
_HEADS = {f.name: _family_head(f.name, f.documentation)
          for f in TcflowCollector(lambda: Snapshot(0.0, 0.0, {})).class_families(Snapshot(0.0, 0.0, {}))}
_FAMILY_ORDER = tuple(_HEADS)  # as class_families() yields them


def class_text(snap: Snapshot) -> str:
    """The per-class families of ``snap`` in the text format, as
    generate_latest() writes TcflowCollector.class_families()."""
    lines: dict[str, list[str]] = {f: [_HEADS[f]] for f in _FAMILY_ORDER}
    for ic in snap.interfaces.values():
        who = ic.container or {}
        vals = [_escape(ic.ifname), _escape(ic.netns), *(_escape(who.get(k, "")) for k in CONTAINER_LABELS)]
        for fam, measure, name, template in _TEMPLATES:
            counts = ic.bytes if measure == "bytes" else ic.packets
            lines[fam].append(template.format(*vals) + floatToGoString(counts[name]) + "\n")
    return "".join("".join(lines[f]) for f in _FAMILY_ORDER)
