"""deploy/: the files parse, and say what docs/serve.md and docs/containers.md promise."""

from __future__ import annotations

import pathlib
import subprocess

from tests.support.tools import require

DEPLOY = pathlib.Path(__file__).resolve().parents[2] / "deploy"


def test_prometheus_config_is_valid() -> None:
    promtool = require("promtool")
    r = subprocess.run([promtool, "check", "config", str(DEPLOY / "prometheus.yml")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_systemd_unit_pins_so_a_restart_loses_nothing() -> None:
    text = (DEPLOY / "tcflow.service").read_text()
    exec_start = next(ln for ln in text.splitlines() if ln.startswith("ExecStart="))
    assert " serve " in exec_start and "--pin" in exec_start and "127.0.0.1:" in exec_start
    assert "Restart=on-failure" in text
    bounding = next(ln for ln in text.splitlines() if ln.startswith("CapabilityBoundingSet=")).split("=", 1)[1]
    assert {"CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP"} <= set(bounding.split())  # the HTTP front's drop to nobody


def test_daemonset_serves_every_container_and_states_limits() -> None:
    text = (DEPLOY / "daemonset.yaml").read_text()
    for needle in ("hostNetwork: true", "hostPID: true", "privileged: true", "mountPath: /sys/fs/bpf", "--pin",
                   '"--containers"', "Limitations", "prometheus.io/port", "kind: Service", "detach", "--all",
                   "limits: {memory:"):
        assert needle in text, needle
    assert "/usr/src" not in text.split("apiVersion", 1)[1]  # it would hide the image's own headers


def _promtool() -> str:
    return require("promtool")


def test_recording_and_alert_rules_pass_their_unit_tests() -> None:
    promtool = _promtool()
    r = subprocess.run([promtool, "check", "rules", str(DEPLOY / "prometheus-rules.yml")], capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([promtool, "test", "rules", str(DEPLOY / "tests" / "rules_test.yml")], capture_output=True,
                       text=True)
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr


def _exported_names() -> set[str]:
    """Every metric name tcflow's /metrics can show, from the collector itself."""
    from tcflow.model.classes import NUM_CLASSES
    from tcflow.model.snapshot import Hooks, make_snapshot
    from tcflow.output import prometheus

    snap = make_snapshot([("v0", "ns1", 2, Hooks("tc"), [1] * NUM_CLASSES, [1] * NUM_CLASSES)])
    c = prometheus.TcflowCollector(lambda: snap, lambda: {"tc_ingress": (1, 1)},
                                   lambda: {"slots": 1, "slots_used": 1, "attach_errors": 0})
    text = prometheus.render(prometheus.registry(c)).decode()
    return {ln.split("{")[0].split(" ")[0] for ln in text.splitlines() if ln and not ln.startswith("#")}


def test_grafana_dashboard_expressions_parse_and_use_only_tcflow_metrics(tmp_path) -> None:  # noqa: ANN001
    import json
    import re

    dash = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    queries = [v["query"]["query"] for v in dash["templating"]["list"] if isinstance(v.get("query"), dict)]
    assert len(exprs) == 9  # the dashboard's panels' queries, each checked below
    rules = ["groups:", "  - name: dashboard", "    rules:"]
    for i, e in enumerate(exprs + [re.sub(r"label_values\((.*), \w+\)$", r"\1", q) for q in queries]):
        concrete = e.replace("$__rate_interval", "1m").replace("$instance", ".*").replace("$netns", ".*") \
            .replace("$device", ".*")
        rules += [f"      - record: dashboard_expr_{i}", f"        expr: {json.dumps(concrete)}"]
    (tmp_path / "exprs.yml").write_text("\n".join(rules) + "\n")
    r = subprocess.run([_promtool(), "check", "rules", str(tmp_path / "exprs.yml")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    used = {m for e in exprs + queries for m in re.findall(r"\b(?:tcflow|process)_[a-z_]+\b", e)}
    assert used and used <= _exported_names(), used - _exported_names()
