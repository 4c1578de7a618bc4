"""Fixtures of the BPF_PROG_TEST_RUN tier: one Datapath for the session, a harness per test."""

from __future__ import annotations

from typing import Iterator

import pytest

from tcflow.bpf import loader
from tcflow.engine.slots import SlotTable
from tests.support.harness import Harness


@pytest.fixture(scope="session")
def datapath() -> Iterator[loader.Datapath]:
    dp = loader.Datapath()
    try:
        yield dp
    finally:
        dp.close()


@pytest.fixture(scope="session")
def slots(datapath: loader.Datapath) -> SlotTable:
    return SlotTable(datapath)


@pytest.fixture
def harness(datapath: loader.Datapath, slots: SlotTable) -> Iterator[Harness]:
    h = Harness(datapath, slots)
    try:
        yield h
    finally:
        h.close()
