"""The dashboard's history (tcflow/output/history.py): exact rates from
cumulative counters, a ring that wraps, a bound on interfaces that leaves the
sum over all of them whole, and nothing negative after a re-attach."""

from __future__ import annotations

import json
from typing import Optional

from tcflow.model.classes import NAMES
from tcflow.model.snapshot import Hooks, Snapshot, make_snapshot
from tcflow.output import history as h


def snap(t: float, counts: dict[str, dict[str, int]], container: Optional[dict[str, str]] = None) -> Snapshot:
    entries = []
    for key, by_class in counts.items():
        b = [by_class.get(n, 0) for n in NAMES]
        entry = (key, "", 1, Hooks("tc"), b, [v // 100 for v in b])
        entries.append((*entry, container) if container else entry)
    return make_snapshot(entries, now=1_000_000 + t, mono=t)


def test_rates_are_exact_per_series_and_summed_over_interfaces() -> None:
    hist = h.History()
    hist.record(snap(0, {"a": {}, "b": {}}))
    hist.record(snap(2, {"a": {"L3_TCP_SEND_V4": 2000, "L3_UDP_RECV_V6": 600}, "b": {"L3_TCP_SEND_V4": 1000}}))
    a = hist.reply("a")
    assert a["times"] == [1_000_000.0, 1_000_002.0]
    assert a["series"]["L3_TCP_SEND_V4"] == [None, 1000.0] and a["series"]["L3_UDP_RECV_V6"] == [None, 300.0]
    assert set(a["series"]) == set(h.SERIES) and len(h.SERIES) == 12
    everything = hist.reply(h.ALL)
    assert everything["series"]["L3_TCP_SEND_V4"] == [None, 1500.0]
    assert everything["totals"]["bytes"]["L3_TCP_SEND_V4"] == 3000
    assert a["totals"]["packets"]["L3_TCP_SEND_V4"] == 20
    assert [e["key"] for e in a["interfaces"]] == ["a", "b"]
    assert hist.reply("a", since=1_000_000.0)["times"] == [1_000_002.0]  # only what the page has not got
    json.dumps(everything)  # plain data, NaN-free
    assert "NaN" not in json.dumps(a)


def test_ring_wraps_at_the_window() -> None:
    hist = h.History()
    for i in range(h.POINTS + 10):
        hist.record(snap(i, {"a": {"L3_TCP_RECV_V4": 100 * i}}))
    r = hist.reply("a")
    assert len(r["times"]) == h.POINTS and r["times"][0] == 1_000_010.0 and r["times"][-1] == 1_000_000.0 + h.POINTS + 9
    assert set(r["series"]["L3_TCP_RECV_V4"]) == {100.0}


def test_counters_going_backwards_give_zero_not_negative() -> None:
    hist = h.History()
    hist.record(snap(0, {"a": {"L3_TCP_SEND_V4": 5000}}))
    hist.record(snap(1, {"a": {"L3_TCP_SEND_V4": 100}}))  # detached and attached again: a new count
    hist.record(snap(2, {"a": {"L3_TCP_SEND_V4": 400}}))
    assert hist.reply("a")["series"]["L3_TCP_SEND_V4"] == [None, 0.0, 300.0]


def test_bounded_keys_and_the_sum_stays_whole() -> None:
    hist = h.History(max_keys=2)
    names = ["a", "b", "c", "d"]
    hist.record(snap(0, {n: {} for n in names}))
    hist.record(snap(1, {n: {"L3_UDP_SEND_V4": 10} for n in names}))
    assert [hist.reply(n)["kept"] for n in names] == [True, True, False, False]
    assert hist.reply("c")["series"]["L3_UDP_SEND_V4"] == [None, None] and hist.reply("c")["known"]
    assert hist.reply("a")["left_out"] == 2
    assert hist.reply(h.ALL)["series"]["L3_UDP_SEND_V4"] == [None, 40.0]  # every interface, kept or not
    assert len(hist.rings) == 3
    assert hist.size() == {"rings": 2, "max": 2, "left_out": 2}  # as /healthz says it


def test_a_gone_interface_leaves_a_gap_then_is_forgotten() -> None:
    hist = h.History()
    hist.record(snap(0, {"a": {}, "b": {}}))
    hist.record(snap(1, {"b": {}}))
    assert hist.reply("a")["series"]["L3_TCP_SEND_V4"] == [None, None] and not hist.reply("a")["known"]
    hist.record(snap(2 + h.WINDOW_S, {"b": {}}))
    assert "a" not in hist.rings and not hist.reply("a")["kept"]
    assert hist.size()["rings"] == 1


def test_container_label_and_hostile_names_stay_data() -> None:
    hist = h.History()
    labels = {"container_id": "f" * 64, "container": "<img src=x onerror=alert(1)>", "runtime": "docker",
              "pod": "", "namespace": ""}
    hist.record(snap(0, {"ns1/eth0": {}}, container=labels))
    e = hist.reply(h.ALL)["interfaces"][0]
    assert e["label"] == "<img src=x onerror=alert(1)> (eth0)" and e["container"] == labels  # the page sets textContent


def test_flows_for_the_page_when_serve_counts_them() -> None:
    def flow(port: int, rate: float) -> dict:
        return {"protocol": "udp", "local": {"address": "198.18.0.1", "port": port},
                "remote": {"address": "198.18.0.2", "port": 53}, "icmp_type": None,
                "rate": {"recv": rate, "send": 0.0}, "ip_bytes": {"recv": 1, "send": 0}}

    hist = h.History()
    s = snap(0, {"a": {}, "b": {}})
    hist.record(s)
    assert hist.reply("a")["flows"] is None and hist.reply(h.ALL)["flows"] is None  # no --flows: no section
    flows = {"a": {"top": [flow(i, float(i)) for i in range(15)]}, "b": {"top": [flow(100, 50.0)]}}
    hist.record(s.__class__(s.time + 1, s.monotonic + 1, s.interfaces, flows))
    a = hist.reply("a")["flows"]
    assert [f["local"]["port"] for f in a] == list(range(10))  # the first FLOWS_SHOWN, as the agent ranked them
    every = hist.reply(h.ALL)["flows"]
    assert every[0]["interface"] == "b" and every[0]["local"]["port"] == 100 and len(every) == h.FLOWS_SHOWN
    assert "flows" not in hist.reply("a")["interfaces"][0]
