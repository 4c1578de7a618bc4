"""2. Throughput over a veth between namespaces, with and without tcflow.

iperf3 from namespace a to namespace b over one veth pair; tcflow watches
the receiving end (veth-b), where the recv hook sits on the data path.
For each configuration, runs alternate with "no program" (none, X, none,
X, ...), and the figure is the median of the per-pair ratios X / none, so
that drift on a shared machine hits both sides of each pair alike.
"""

from __future__ import annotations

import statistics
from typing import Any, Optional  # noqa: F401

import tcflow
from tcflow.bpf.loader import Datapath
from tcflow.host.sandbox import Sandbox, VethPair
from tests.traffic_gen import iperf

CONFIGS: dict[str, dict[str, Any]] = {
    "tc_ingress": {"ingress": "tc"},
    "xdp_native": {"ingress": "xdp", "xdp_mode": "native"},
    "xdp_generic": {"ingress": "xdp", "xdp_mode": "generic"},
}
RECOMMENDED_FOR_VETH = "tc_ingress"  # what --ingress auto picks on a veth


def _iperf(pair: VethPair, proto: str, seconds: float) -> float:
    """One client run; TCP: received bits/s; UDP (64-byte payloads): received packets/s."""
    end = iperf.client(pair, pair.ip4_b, proto, seconds)["end"]
    if proto == "tcp":
        return float(end["sum_received"]["bits_per_second"])
    s = end["sum"]
    return (s["packets"] - s["lost_packets"]) / s["seconds"]


def _measure(pair: VethPair, dp: Datapath, config: Optional[str], proto: str, seconds: float) -> float:
    if config is None:
        return _iperf(pair, proto, seconds)
    with tcflow.Monitor([pair.dev_b], netns=pair.ns_b, datapath=dp, **CONFIGS[config]):
        return _iperf(pair, proto, seconds)


def run(pairs: int = 5, seconds: float = 3.0, configs: tuple[str, ...] = tuple(CONFIGS)) -> dict[str, Any]:
    results: dict[str, Any] = {}
    with Datapath() as dp, Sandbox("tcfb-") as box:  # one compile, before timing anything
        pair = box.pair(dev_a="veth-a", dev_b="veth-b")
        for proto in ("tcp", "udp"):
            for config in configs:
                base, with_, ratios = [], [], []
                for _ in range(pairs):
                    b = _measure(pair, dp, None, proto, seconds)
                    w = _measure(pair, dp, config, proto, seconds)
                    base.append(b)
                    with_.append(w)
                    ratios.append(w / b)
                results[f"{proto}/{config}"] = {
                    "proto": proto, "config": config, "unit": "bit/s" if proto == "tcp" else "packet/s",
                    "none": base, "with": with_, "ratios": ratios, "median_ratio": statistics.median(ratios),
                    "median_none": statistics.median(base), "median_with": statistics.median(with_)}
    rec = results.get(f"tcp/{RECOMMENDED_FOR_VETH}")
    return {"pairs": pairs, "seconds": seconds, "where": "tcflow on the receiving veth", "results": results,
            "target": {"what": "the configuration tcflow recommends for veths (clsact ingress) keeps at least "
                               "95% of TCP throughput",
                       "median_ratio": rec["median_ratio"] if rec else None,
                       "met": bool(rec and rec["median_ratio"] >= 0.95)}}
