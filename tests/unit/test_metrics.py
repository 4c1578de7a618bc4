"""/metrics: render() writes the per-class families by hand; what it writes
is exactly prometheus_client's generate_latest() of the same collector,
hostile names and huge counters included. No root."""

from __future__ import annotations

import random
import re

from prometheus_client import CollectorRegistry, generate_latest

from tcflow.model.classes import NAMES
from tcflow.model.flows import Counts, SlotFlows
from tcflow.model.snapshot import Hooks, Snapshot, make_snapshot
from tcflow.output import prometheus

HOSTILE = ['a"b', "back\\slash", "new\nline", "{0}{1}", "ünï\u200bcode", "", "}{", "%s%d"]


def snapshot(n: int) -> Snapshot:
    rnd = random.Random(n)
    entries = []
    for i in range(n):
        who = None if i % 3 == 0 else {"container_id": f"{i:064x}", "container": HOSTILE[i % len(HOSTILE)],
                                       "runtime": "docker", "pod": HOSTILE[(i + 1) % len(HOSTILE)], "namespace": ""}
        b = [rnd.choice([0, 1, 10**6, 2**63 - 1, rnd.randrange(10**12)]) for _ in NAMES]
        p = [rnd.randrange(10**9) for _ in NAMES]
        entries.append((HOSTILE[i % len(HOSTILE)] + str(i), HOSTILE[(i + 3) % len(HOSTILE)], i + 1,
                        Hooks("tc", None), b, p, who))
    return make_snapshot(entries)


def reference(collector: prometheus.TcflowCollector) -> bytes:
    """What prometheus_client writes for the same collector (process and platform families as render() adds)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(collector)  # type: ignore[arg-type]
    prometheus.ProcessCollector(registry=reg)
    prometheus.PlatformCollector(registry=reg)
    return generate_latest(reg)


def _without_process(text: bytes) -> bytes:
    # process_* move between two reads (CPU seconds, memory): compare the rest
    return b"\n".join(ln for ln in text.split(b"\n") if not re.match(rb"(# (HELP|TYPE) )?process_", ln))


def test_render_writes_exactly_what_prometheus_client_would() -> None:
    for n in (0, 1, 7, 60):
        snap = snapshot(n)
        if n == 7:  # with flows: their families come from prometheus_client in both
            empty = Counts()
            snap = Snapshot(snap.time, snap.monotonic, snap.interfaces,
                            {k: SlotFlows(0, [], empty, empty, empty, 0, 16, 0).as_dict({}) for k in snap.interfaces})
        c = prometheus.TcflowCollector(lambda s=snap: s, lambda: {"tc_ingress": (3, 300)},
                                       lambda: {"slots": 8, "slots_used": 1, "attach_errors": 0})
        got = prometheus.render(prometheus.registry(c))
        assert _without_process(got) == _without_process(reference(c)), n
        assert got.count(b"\ntcflow_ip_bytes_total{") == n * sum(1 for x in NAMES if x.startswith("L3_"))


def test_a_hostile_name_stays_one_label_value() -> None:
    from prometheus_client.parser import text_string_to_metric_families

    snap = snapshot(8)
    text = prometheus.render(prometheus.registry(prometheus.TcflowCollector(lambda: snap))).decode()
    devices = {s.labels["device"] for f in text_string_to_metric_families(text) if f.name == "tcflow_ip_bytes"
               for s in f.samples}
    assert devices == {ic.ifname for ic in snap.interfaces.values()}
