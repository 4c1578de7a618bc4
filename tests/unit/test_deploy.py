"""deploy/: the files parse, and say what the README promises."""

from __future__ import annotations

import pathlib
import shutil
import subprocess

import pytest

DEPLOY = pathlib.Path(__file__).resolve().parents[2] / "deploy"


def test_prometheus_config_is_valid() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (make setup installs Debian's prometheus)")
    r = subprocess.run([promtool, "check", "config", str(DEPLOY / "prometheus.yml")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_systemd_unit_pins_so_a_restart_loses_nothing() -> None:
    text = (DEPLOY / "tcflow.service").read_text()
    exec_start = next(ln for ln in text.splitlines() if ln.startswith("ExecStart="))
    assert " serve " in exec_start and "--pin" in exec_start and "127.0.0.1:" in exec_start
    assert "Restart=on-failure" in text


def test_daemonset_is_privileged_host_network_with_bpffs_and_states_limits() -> None:
    text = (DEPLOY / "daemonset.yaml").read_text()
    for needle in ("hostNetwork: true", "privileged: true", "mountPath: /sys/fs/bpf", "--pin", "Limitations"):
        assert needle in text, needle
