"""Shared test set-up: the root requirement of the bpf and netns tiers."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    # The README's test command runs as root; a plain `pytest` as a user
    # still runs the unit tier and says why the rest did not run.
    skip = pytest.mark.skip(reason="needs root (BPF and network namespaces)")
    for item in items:
        if "/tests/bpf/" in str(item.fspath) or "/tests/netns/" in str(item.fspath):
            item.add_marker(skip)
