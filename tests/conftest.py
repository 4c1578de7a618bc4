"""Shared set-up for every tier: the root requirement, and namespace fixtures.

Test hosts use docs/SPEC.md's ranges only (198.18.0.0/15, 2001:db8::/32), in
namespaces made here (tcflow/host/sandbox.py, the same code the demo and the
bench use), with no default route. Fixtures clean up even when a test fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from typing import Callable, Iterator

import pytest

from tcflow.host.sandbox import Sandbox, VethPair, remove_leftovers
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


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    """Namespaces and veths of this test's own, removed afterwards."""
    box = Sandbox(PREFIX)
    try:
        yield box
    finally:
        box.close()


@pytest.fixture
def make_netns(sandbox: Sandbox) -> Callable[[], str]:
    """Factory: a new empty namespace (lo up), deleted after the test."""
    return sandbox.netns


@pytest.fixture
def veth_pair(sandbox: Sandbox) -> VethPair:
    """Addressed pair (IPv4 + IPv6) for socket traffic."""
    return sandbox.pair()


@pytest.fixture
def silent_pair(sandbox: Sandbox) -> VethPair:
    """Unaddressed pair, IPv6 off: only the frames a test injects cross it."""
    return sandbox.pair(addresses=False)


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
