"""The benchmark runs end to end (tiny counts), so that `make bench` cannot rot.

It checks shapes and sanity, never speed: figures are not asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.support.cli import REPO


def test_bench_smoke_writes_every_result_and_the_report(tmp_path) -> None:  # noqa: ANN001
    r = subprocess.run([sys.executable, "-m", "bench.run", "--smoke", "--out", str(tmp_path)], cwd=REPO,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    for name in ("insitu", "perpacket", "throughput", "scale", "startup", "scrape", "containers", "flows",
                 "discovery", "flowscale"):
        with open(tmp_path / f"{name}.json") as f:
            doc = json.load(f)
        assert doc["smoke"] is True and doc["machine"]["kernel"]
        if name not in ("startup", "scrape", "containers", "flowscale"):
            assert isinstance(doc["target"]["met"], bool)
    pp = json.load(open(tmp_path / "perpacket.json"))
    assert {r["program"] for r in pp["results"]} == {"xdp", "tc_ingress", "tc_egress"}
    assert len({r["frame"] for r in pp["results"]}) == 6
    assert all(r["ns"] > 0 and r["floor_ns"] > 0 for r in pp["results"])
    sc = json.load(open(tmp_path / "scale.json"))
    assert [x["interfaces"] for x in sc["results"]] == [1, 3]
    assert all(x["programs_loaded"] == 2 for x in sc["results"])  # one load per namespace, not per interface
    report = (tmp_path / "report.md").read_text()
    dc = json.load(open(tmp_path / "discovery.json"))
    assert [(r["containers"], r["extra"], r["forks_per_s"]) for r in dc["rows"]] == [(2, 20, 0.0)]
    assert dc["rows"][0]["host_processes"] >= 20 and dc["rows"][0]["cpu_percent"] >= 0
    node = dc["node"]
    assert node["containers"] == 2 and node["rss_mib"] > 0 and len(node["first_packet_s"]) == 1
    assert node["scrape_ms"]["/metrics"]["p99"] > 0 and node["bytes"]["/metrics"] > 0
    assert "## 9. A node agent at node scale" in report
    fs = json.load(open(tmp_path / "flowscale.json"))
    assert [r["flows"] for r in fs["rows"]] == [1, 100]
    assert all(r["on_ns"] > 0 and r["off_ns"] > 0 and r["packets_per_run"] > 100 for r in fs["rows"])
    assert "## 10. Flows at thousands" in report
    assert json.load(open(tmp_path / "scrape.json"))["errors"] == 0
    ins = json.load(open(tmp_path / "insitu.json"))
    assert {r["point"] for r in ins["rows"]} == {"tc_ingress", "tc_egress"}
    assert all(r["floor_ns"] > 0 and r["tcflow_ns"] > 0 for r in ins["rows"])
    fl = json.load(open(tmp_path / "flows.json"))
    assert {r["point"] for r in fl["rows"]} == {"tc_ingress", "tc_egress"}
    # 200 flows may all sit in the per-CPU cache lines: the table need not grow
    assert fl["memory"]["flows_counted"] >= 200 and fl["memory"]["cache_bytes"] > 0
    ct = json.load(open(tmp_path / "containers.json"))
    assert ct["containers"] == 2 and ct["after_removal"]["interfaces"] == 0
    for heading in ("Targets", "in situ", "Per-packet", "Throughput", "Scale", "Start-up", "under load", "Containers",
                    "Flows"):
        assert heading in report
    assert "not met" in report or "**met**" in report
    assert not [ln for ln in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
                .splitlines() if ln.startswith("tcfb-")]
    assert os.path.exists(tmp_path / "report.md")
