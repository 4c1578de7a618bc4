"""The plugin as a user installs it: in a fresh venv outside this clone,
`pip install` of the clone, then pytest on test files that use only the
fixtures (no import of tcflow). Also as `nobody` (skipped, and why), and
under pytest-xdist (`-n 2`) on the plugin's own tests, leaving nothing.

Offline: the venv gets tcflow from the clone (no index) and its
dependencies (pyroute2, prometheus_client, pytest, scapy, pytest-xdist)
from this clone's .venv through a .pth file, so no package index is asked
at test time."""

from __future__ import annotations

import os
import re
import shutil
import site
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Iterator

import pytest

from tests.support.cli import REPO

USER_TEST = '''
import socket


def test_a_sender_of_13_datagrams_of_700_bytes(tcflow_veth):
    v = tcflow_veth
    rx = v.b.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind((v.b.ipv4, 5353))
    with v.meter() as m:
        tx = v.a.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for _ in range(13):
            tx.sendto(b"x" * 700, (v.b.ipv4, 5353))
        for _ in range(13):
            rx.recv(2048)
        port = tx.getsockname()[1]
    assert m.bytes["L4_UDP_SEND_V4"] == WANT
    [flow] = m.flows
    assert (flow.protocol, flow.local, flow.remote) == ("udp", (v.a.ipv4, port), (v.b.ipv4, 5353))
    assert (flow.payload_sent, flow.packets_sent) == (9100, 13)
    m.assert_only_flows(["udp 198.18.0.2:5353"])
    m.assert_no_traffic(family=6)
'''


@pytest.fixture(scope="module")
def venv() -> Iterator[Path]:
    """A fresh venv (Debian's python3, which sees bcc), tcflow pip-installed
    into it from a copy of this clone; where `nobody` can run it too."""
    root = Path(tempfile.mkdtemp(prefix="tcflow-user-", dir="/tmp"))
    try:
        yield _make_venv(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _make_venv(root: Path) -> Path:
    os.chmod(root, 0o755)
    src = root / "src"
    shutil.copytree(REPO, src, symlinks=True, ignore=shutil.ignore_patterns(
        ".venv", ".git", "build", "*.egg-info", "test-artifacts", "__pycache__", ".pytest_cache", "bench"))
    env = root / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--system-site-packages", str(env)], check=True, timeout=120)
    py = env / "bin" / "python"
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
                        "--no-build-isolation", "--no-index", str(src)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "tcflow_test_deps.pth").write_text(site.getsitepackages()[0] + "\n")
    shutil.rmtree(src)
    return env


def _pytest(venv: Path, cwd: Path, *args: str, user: bool = False) -> subprocess.CompletedProcess[str]:
    argv = [str(venv / "bin" / "python"), "-m", "pytest", "-p", "no:cacheprovider", *args]
    if user:
        argv = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *argv]
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={"PATH": os.environ["PATH"], "HOME": str(cwd), "LANG": "C.UTF-8"})


def _project(venv: Path, name: str, want: int) -> Path:
    d = venv.parent / name
    d.mkdir()
    (d / "test_app.py").write_text(USER_TEST.replace("WANT", str(want)))
    os.chmod(d, 0o777)  # nobody writes its own files there
    return d


def test_installed_fixtures_hold_exact_figures_with_no_import(venv: Path) -> None:
    project = _project(venv, "right", 9100)
    assert "import tcflow" not in (project / "test_app.py").read_text()
    r = _pytest(venv, project, "-q", "test_app.py")
    assert r.returncode == 0 and "1 passed" in r.stdout, r.stdout + r.stderr
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import tcflow; print(tcflow.__file__)"],
                           capture_output=True, text=True, cwd=project).stdout
    assert where.startswith(str(venv)), where  # the installed copy, not this clone


def test_a_wrong_figure_fails_readably_and_the_junit_xml_carries_the_meter(venv: Path) -> None:
    project = _project(venv, "wrong", 9101)
    r = _pytest(venv, project, "-q", "test_app.py", "--junitxml=out.xml")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "assert 9100 == 9101" in r.stdout, r.stdout
    assert "tcflow meter" in r.stdout and "L4_UDP_SEND_V4  13       9100" in r.stdout, r.stdout
    case = ET.parse(project / "out.xml").getroot().find(".//testcase")
    assert case is not None and case.find("failure") is not None
    props = {p.get("name"): p.get("value") or "" for p in case.iter("property")}
    assert "udp 198.18.0.1:" in props["tcflow_meter"] and "<-> 198.18.0.2:5353" in props["tcflow_meter"], props


def test_as_a_user_the_fixtures_skip_and_say_why(venv: Path) -> None:
    project = _project(venv, "user", 9100)
    r = _pytest(venv, project, "-q", "-rs", "test_app.py", user=True)
    assert r.returncode == 0 and "1 skipped" in r.stdout, r.stdout + r.stderr
    assert "tcflow fixtures need root" in r.stdout, r.stdout
    r = _pytest(venv, project, "-q", "test_app.py", "--tcflow-require", user=True)
    assert r.returncode == 1 and "--tcflow-require" in r.stdout, r.stdout + r.stderr


def _ours() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {ln.split()[0] for ln in out.splitlines() if ln.startswith("tcfp")}


def test_the_plugins_own_tests_pass_under_xdist_and_leave_nothing() -> None:
    before = _ours()
    r = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-v", "-n", "2",
                        "tests/plugin/test_fixtures.py"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and " passed" in r.stdout, r.stdout[-3000:] + r.stderr[-2000:]
    assert re.search(r"\[gw0\].*PASSED", r.stdout) and re.search(r"\[gw1\].*PASSED", r.stdout), r.stdout
    assert _ours() <= before  # every worker's namespaces went with its tests
