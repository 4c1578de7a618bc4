"""Shared set-up for every tier: the root requirement, and namespace fixtures.

Test hosts use docs/SPEC.md's ranges only (198.18.0.0/15, 2001:db8::/32), in
namespaces made by tcflow's own pytest plugin (tcflow/testing/plugin.py,
over tcflow/host/sandbox.py: the same code the demo and the bench use), with
no default route. Fixtures clean up even when a test fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from typing import Callable, Iterator

import pytest

from tcflow.host.sandbox import Sandbox, VethPair, remove_leftovers
from tcflow.testing.lab import Lab
from tests.support.shell import sh

# Names of this test session's own: a second session running at the same
# time (a developer's, beside CI) neither sees nor removes them.
SESSION = f"{os.getpid() % 0x10000:04x}"
PREFIX = f"tcft{SESSION}-"
PIN_PREFIX = f"/sys/fs/bpf/tcflow-test-{SESSION}-"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    # The README's test command runs as root; a plain `pytest` as a user
    # still runs the unit tier and says why the rest did not run.
    skip = pytest.mark.skip(reason="needs root (BPF and network namespaces)")
    for item in items:
        if "/tests/bpf/" in str(item.fspath) or "/tests/netns/" in str(item.fspath):
            item.add_marker(skip)


def pytest_configure(config: pytest.Config) -> None:
    # tcflow's own pytest plugin (tcflow/testing/plugin.py) gives the
    # namespaces and veths: installed (make setup), its pytest11 entry point
    # has loaded it already; from a bare checkout, it is loaded here.
    if not config.pluginmanager.has_plugin("tcflow"):
        from tcflow.testing import plugin

        config.pluginmanager.register(plugin, "tcflow")


@pytest.fixture
def sandbox(tcflow_lab: Lab) -> Sandbox:
    """Namespaces and veths of this test's own (the plugin's tcflow_lab), removed afterwards."""
    return tcflow_lab.sandbox


@pytest.fixture
def make_netns(tcflow_netns: Callable[[], str]) -> Callable[[], str]:
    """Factory: a new empty namespace (lo up), deleted after the test."""
    return tcflow_netns


@pytest.fixture
def veth_pair(tcflow_lab: Lab) -> VethPair:
    """Addressed pair (IPv4 + IPv6) for socket traffic (the plugin's, not waited quiet)."""
    return tcflow_lab.veth(quiet=False).pair


@pytest.fixture
def silent_pair(tcflow_lab: Lab) -> VethPair:
    """Unaddressed pair, IPv6 off: only the frames a test injects cross it."""
    return tcflow_lab.veth(addresses=False, quiet=False).pair


@pytest.fixture
def pin_dir() -> Iterator[str]:
    """A pin directory of the test's own: a real deployment's pins are never touched."""
    path = f"{PIN_PREFIX}{uuid.uuid4().hex[:8]}"
    try:
        yield path
    finally:
        subprocess.run([sys.executable, "-m", "tcflow", "detach", "--all", "--pin-dir", path], capture_output=True)
        sh(f"rm -rf {path}", check=False)


@pytest.fixture
def pin_env(pin_dir: str) -> dict[str, str]:
    return dict(os.environ, TCFLOW_PIN_DIR=pin_dir)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # Belt and braces: nothing named like ours survives the session.
    if os.geteuid() == 0:
        remove_leftovers(PREFIX)
        sh(f"rm -rf {PIN_PREFIX}*", check=False)
