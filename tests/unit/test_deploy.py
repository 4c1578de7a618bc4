"""deploy/: the files parse, and say what docs/serve.md and docs/containers.md promise."""

from __future__ import annotations

import pathlib
import shlex
import shutil
import subprocess

import pytest

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


def _needs(argv: list[str]) -> list[str]:
    """What tcflow's table (engine/privileges.py, measured by tests/netns/test_capabilities.py) says this
    command line needs, where bpffs is mounted (systemd mounts it; the DaemonSet mounts the host's)."""
    from unittest import mock

    from tcflow.cli.parser import mode_of, parser
    from tcflow.engine.privileges import grant, needs

    with mock.patch("tcflow.host.pins.is_bpffs", return_value=True):
        return grant(needs(mode_of(parser().parse_args(argv))))


def test_the_unit_grants_exactly_what_its_command_needs_and_verifies() -> None:
    text = (DEPLOY / "tcflow.service").read_text()
    exec_start = next(ln for ln in text.splitlines() if ln.startswith("ExecStart=")).split("=", 1)[1]
    bounding = next(ln for ln in text.splitlines() if ln.startswith("CapabilityBoundingSet=")).split("=", 1)[1]
    want = _needs(shlex.split(exec_start)[1:])
    assert sorted(bounding.split()) == sorted(want), (bounding, want)
    assert "CAP_SYS_ADMIN" not in want and {"CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP"} <= set(want)
    for line in ("NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
                 "RuntimeDirectory=tcflow", "RuntimeDirectoryPreserve=yes", "CacheDirectory=tcflow"):
        assert line in text.splitlines(), line
    assert "AmbientCapabilities" not in text  # root with a bounding set: nothing to add
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (Debian's systemd package has it)")
    r = subprocess.run([analyze, "verify", str(DEPLOY / "tcflow.service")], capture_output=True, text=True)
    # a missing /usr/local/sbin/tcflow (no `make install` here) is the one thing it may say
    said = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip() and "/usr/local/sbin/tcflow" not in ln]
    assert said == [], said


def test_the_daemonset_grants_exactly_what_its_command_needs() -> None:
    import yaml

    docs = list(yaml.safe_load_all((DEPLOY / "daemonset.yaml").read_text()))
    pod = next(d for d in docs if d and d.get("kind") == "DaemonSet")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    ctx = container["securityContext"]
    assert ctx.get("privileged") is False and ctx["readOnlyRootFilesystem"] is True
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    assert ctx["capabilities"]["drop"] == ["ALL"]
    want = [c.removeprefix("CAP_") for c in _needs(container["args"])]
    assert sorted(ctx["capabilities"]["add"]) == sorted(want), (ctx["capabilities"]["add"], want)
    # what a read-only root leaves writable is what tcflow writes: pins, its run and cache directories, /tmp
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    for path in ("/sys/fs/bpf", "/run/tcflow", "/var/cache/tcflow", "/tmp"):
        assert not mounts[path].get("readOnly"), path
    assert mounts["/sys/fs/bpf"].get("mountPropagation") != "Bidirectional"  # privileged pods only


def test_daemonset_serves_every_container_and_states_limits() -> None:
    text = (DEPLOY / "daemonset.yaml").read_text()
    for needle in ("hostNetwork: true", "hostPID: true", "privileged: false", "mountPath: /sys/fs/bpf", "--pin",
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


K8S_VERSION = "1.30.0"  # the schemas kubernetes-validate carries offline; 1.25 on are there
CORE = ("daemonset.yaml", "networkpolicy.yaml", "web-config.yaml")
OPERATOR = ("servicemonitor.yaml", "prometheusrule.yaml")  # CRDs: no schema offline (checked by hand below)


def _docs(name: str) -> list[dict]:
    import yaml

    return [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d]


def test_every_kubernetes_manifest_validates_against_the_api_schemas() -> None:
    import kubernetes_validate

    kinds = []
    for name in CORE:
        for doc in _docs(name):
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)  # raises on any unknown or wrong field
            kinds.append(doc["kind"])
    assert sorted(kinds) == ["DaemonSet", "NetworkPolicy", "Secret", "Service"]
    for name in OPERATOR:  # the Prometheus Operator's kinds are not in kubernetes-validate: said, not skipped silently
        with pytest.raises(kubernetes_validate.SchemaNotFoundError):
            kubernetes_validate.validate(_docs(name)[0], K8S_VERSION, strict=True)


def test_the_prometheusrule_is_the_promtool_tested_rules(tmp_path: pathlib.Path) -> None:
    import yaml

    [rule] = _docs("prometheusrule.yaml")
    assert (rule["apiVersion"], rule["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    assert set(rule) == {"apiVersion", "kind", "metadata", "spec"} and set(rule["spec"]) == {"groups"}
    assert rule["spec"]["groups"] == yaml.safe_load((DEPLOY / "prometheus-rules.yml").read_text())["groups"]
    out = tmp_path / "rules.yml"
    out.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    r = subprocess.run([_promtool(), "check", "rules", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_servicemonitor_networkpolicy_and_daemonset_agree() -> None:
    daemonset, service = _docs("daemonset.yaml")
    [monitor] = _docs("servicemonitor.yaml")
    [policy] = _docs("networkpolicy.yaml")
    assert set(monitor) == {"apiVersion", "kind", "metadata", "spec"}
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [service["metadata"]["namespace"]]
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in service["spec"]["ports"]} and endpoint["scheme"] == "https"
    assert set(endpoint["tlsConfig"]) == {"serverName", "ca", "cert", "keySecret"} and "basicAuth" in endpoint
    pod = daemonset["spec"]["template"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    [port] = policy["spec"]["ingress"][0]["ports"]
    container = pod["spec"]["containers"][0]
    assert port["port"] == container["ports"][0]["containerPort"] == 9462
    args = container["args"]
    assert args[args.index("--web.config.file") + 1] == "/etc/tcflow/web/web.yml"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    secrets = {v["name"]: v["secret"]["secretName"] for v in pod["spec"]["volumes"] if "secret" in v}
    assert secrets == {"web-config": "tcflow-web-config", "tls": "tcflow-tls"}
    assert mounts["web-config"] == "/etc/tcflow/web" and mounts["tls"] == "/etc/tcflow/tls"


def test_the_web_config_secret_is_a_file_tcflow_takes() -> None:
    import trustme

    from tcflow.output.http.webconfig import load

    [secret] = _docs("web-config.yaml")
    ca, client_ca = trustme.CA(), trustme.CA()
    cert = ca.issue_cert("tcflow.monitoring.svc")
    files = {"/etc/tcflow/web/web.yml": secret["stringData"]["web.yml"].encode(),
             "/etc/tcflow/tls/tls.crt": cert.cert_chain_pems[0].bytes(),
             "/etc/tcflow/tls/tls.key": cert.private_key_pem.bytes(),
             "/etc/tcflow/tls/ca.crt": client_ca.cert_pem.bytes()}
    cfg = load("/etc/tcflow/web/web.yml", read=files.__getitem__)
    assert cfg.ssl is not None and set(cfg.users) == {"prometheus"}
    assert cfg.files == tuple(files)
