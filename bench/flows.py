"""8. Flows (`--flows`): what counting per five-tuple costs.

In situ, as section 1 measures: tcflow's TC programs on veth-b while iperf3
runs both ways through it, the kernel's BPF statistics giving ns per run;
the default image (flows off) and the flows image (on), interleaved round by
round. Added ns = on - off, per traffic cell and hook point. iperf3 keeps
one flow each way, so this is the cost per packet of a flow that holds its
line of the per-CPU cache (the common case for a busy flow); a packet whose
line holds another flow also moves that flow's counts into the table (a
hash lookup or insert), which this does not measure.

Memory: 10,000 UDP flows made by real packets (one datagram to each of
10,000 ports), then the flow map's kernel memory (its fdinfo ``memlock``,
the kernel's own account of the map, before and after, per entry in the
table; the flows still in a cache line take no table memory, and the cache
is a fixed size), the agent's RSS growth, and how long one read of the table (``tick``: rates and eviction) and
one report take with 10,000 flows.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import tcflow
from bench.insitu import _stats
from tcflow.bpf import libbpf
from tcflow.bpf.loader import PROG_TC_EGRESS, PROG_TC_INGRESS, Datapath, Options
from tcflow.host.sandbox import Sandbox, VethPair
from tcflow.system import netns
from tests.traffic_gen import iperf
from tests.traffic_gen.sockets import udp_to_ports

POINTS = {"tc_ingress": PROG_TC_INGRESS, "tc_egress": PROG_TC_EGRESS}
TRAFFIC = (("ipv4", "udp"), ("ipv6", "udp"), ("ipv4", "tcp"), ("ipv6", "tcp"))
TARGET_NS = 30


def _one(pair: VethPair, ns: netns.Netns, dp: Datapath, family: str, proto: str, seconds: int) -> dict[str, float]:
    with tcflow.Monitor([pair.dev_b], netns=pair.ns_b, datapath=dp, ingress="tc"):
        fds = {p: dp.prog(name, ns.cookie) for p, name in POINTS.items()}
        before = _stats(fds)
        iperf.client(pair, pair.ip4_b if family == "ipv4" else pair.ip6_b, proto, seconds, "--bidir")
        after = _stats(fds)
    out = {}
    for p in POINTS:
        runs = after[p][0] - before[p][0]
        out[p] = (after[p][1] - before[p][1]) / runs if runs else float("nan")
    return out


def _memlock(fd: int) -> int:
    with open(f"/proc/self/fdinfo/{fd}") as f:
        for line in f:
            if line.startswith("memlock:"):
                return int(line.split()[1])
    return -1


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def _memory(flows: int) -> dict[str, Any]:
    """``flows`` UDP flows through a veth; the map's and the agent's memory."""
    with Datapath(Options(flows=True, flow_entries=2 * flows)) as dp, Sandbox("tcfb-") as box:
        pair = box.pair(dev_a="veth-a", dev_b="veth-b")
        fd = dp.map_fd("flows")
        empty = _memlock(fd)
        with tcflow.Monitor([pair.dev_b], netns=pair.ns_b, datapath=dp, ingress="tc") as mon:
            table = mon.agent.flows
            assert table is not None
            table.tick()
            rss0 = _rss_kib()
            udp_to_ports(pair.ns_a, pair.ip4_b, range(10_000, 10_000 + flows), 32)
            time.sleep(0.5)
            full = _memlock(fd)
            t0 = time.perf_counter()
            table.tick()
            tick_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            rep = table.report([mon.agent.binder.slot(ln) for ln in mon.agent.interfaces()], 10)  # type: ignore[union-attr]
            report_s = time.perf_counter() - t0
            rss1 = _rss_kib()
            active = sum(r.active for r in rep.values())
            in_table = max(r.table_entries for r in rep.values())
            cache = _memlock(dp.map_fd("flow_cache"))
    return {"flows_sent": flows, "flows_counted": active, "table_entries": in_table, "map_bytes_empty": empty,
            "map_bytes": full, "cache_bytes": cache,
            "kernel_bytes_per_flow": (full - empty) / in_table if in_table else None,
            "agent_rss_kib_growth": rss1 - rss0,
            "tick_ms": tick_s * 1000, "report_ms": report_s * 1000, "cpus": libbpf.num_possible_cpus()}


def run(rounds: int = 3, seconds: int = 2, traffic: tuple[tuple[str, str], ...] = TRAFFIC,
        memory_flows: int = 10_000) -> dict[str, Any]:
    stats_fd = libbpf.enable_stats()
    samples: dict[tuple[str, str, str, str], list[float]] = {}
    try:
        with Datapath() as off, Datapath(Options(flows=True)) as on, Sandbox("tcfb-") as box:
            pair = box.pair(dev_a="veth-a", dev_b="veth-b")
            ns = netns.resolve(pair.ns_b)
            for r in range(rounds):
                for family, proto in traffic:
                    order = (("off", off), ("on", on)) if r % 2 == 0 else (("on", on), ("off", off))
                    for variant, dp in order:
                        for point, v in _one(pair, ns, dp, family, proto, seconds).items():
                            samples.setdefault((family, proto, point, variant), []).append(v)
    finally:
        import os

        os.close(stats_fd)
    rows: list[dict[str, Any]] = []
    added: list[float] = []
    for (family, proto, point, variant), vals in samples.items():
        if variant != "on":
            continue
        on_ns = statistics.median(vals)
        off_ns = statistics.median(samples[(family, proto, point, "off")])
        rows.append({"family": family, "proto": proto, "point": point, "off_ns": off_ns, "on_ns": on_ns,
                     "added_ns": on_ns - off_ns, "samples": {"off": samples[(family, proto, point, "off")],
                                                              "on": vals}})
        added.append(on_ns - off_ns)
    median = statistics.median(added) if added else None
    mem = _memory(memory_flows)
    return {"rounds": rounds, "seconds": seconds, "rows": rows, "memory": mem,
            "target": {"what": f"in-situ added ns, flows on over off: at most {TARGET_NS} ns",
                       "median_added_ns": median, "worst_added_ns": max(added, default=None),
                       "met": median is not None and median <= TARGET_NS}}
