"""tcflow's pytest plugin: registered through the ``pytest11`` entry point,
so installing tcflow into a venv gives every test these fixtures, with no
import:

- ``tcflow_veth``: two fresh namespaces joined by a veth pair, addressed
  (198.18.0.1/24 and 2001:db8::1/64 on ``a``, .2 and ::2 on ``b``), no
  default route, quiet: ``.a``/``.b`` (``.netns``, ``.ifname``, ``.ipv4``,
  ``.ipv6``, ``.run()``, ``.popen()``, ``.call()``, ``.socket()``) and
  ``.meter()``, which counts on ``a``'s interface for a ``with`` block.
- ``tcflow_lab``: the Lab behind it, for more pairs and namespaces
  (``.veth()``, ``.netns()``); ``tcflow_netns``: a factory of empty namespaces.
- ``tcflow_meter``: a factory of Meters on any interface or container:
  ``tcflow_meter("eth0", netns="app")``, ``tcflow_meter.container("web")``.
- ``tcflow_traffic``: tcflow's traffic generators (``.sockets``,
  ``.frames``, ``.iperf``), the same ones its own tests use.

Without root, without the bpf() system call or without `ip`, these fixtures
skip their test and say why; ``--tcflow-require`` makes that a failure
instead (for the CI job that must run them). Names are unique per test and
per pytest-xdist worker; everything a test made is removed when it ends,
passes or fails, and what an interrupted session left is removed when it
finishes. A failing test's report carries what its meters counted (the
classes that are not 0 and every flow), in the terminal and as a
``tcflow_meter`` property in JUnit XML.

Disable with ``-p no:tcflow``.
"""

from __future__ import annotations

import os
import shutil
import types
import uuid
from typing import Any, Callable, Iterator, Optional

import pytest

_SESSION = f"{os.getpid() % 0x10000:04x}"
_checked: Optional[str] = None  # "" once the machine was found able; else why not
_made = False  # a lab was made in this process: the session's end looks for leftovers


def _prefix() -> str:
    """Namespace names of this process's own: tcfp<pid>-<random>; a
    pytest-xdist worker is a process of its own."""
    return f"tcfp{_SESSION}-"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("tcflow")
    group.addoption("--tcflow-require", action="store_true", default=False,
                    help="fail (not skip) tests that use tcflow fixtures when the machine cannot run them "
                         "(not root, no bpf(), no `ip`)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "tcflow: uses tcflow's fixtures (namespaces, BPF); needs root")


def _why_not() -> str:
    """Why this machine cannot run the fixtures, or ""."""
    global _checked
    if _checked is None:
        _checked = _probe()
    return _checked


def _probe() -> str:
    if os.geteuid() != 0:
        return "tcflow fixtures need root: they make network namespaces and load BPF programs (run pytest as root)"
    if shutil.which("ip") is None:
        return "tcflow fixtures need iproute2's `ip` (apt-get install iproute2)"
    from tcflow.engine import privileges
    from tcflow.engine.doctor import check_bpf_syscall

    missing = privileges.missing(privileges.needs(privileges.Mode(load=True, netns=True)))
    if missing:
        return (f"tcflow fixtures need {', '.join(n.cap for n in missing)} "
                "(run pytest as root, not in a restricted container)")
    bpf = check_bpf_syscall()
    if not bpf.ok:
        return f"tcflow fixtures need the bpf() system call: {bpf.detail} ({bpf.fix})"
    return ""


def _require(request: pytest.FixtureRequest) -> None:
    why = _why_not()
    if why:
        if request.config.getoption("tcflow_require"):
            pytest.fail(why + " [--tcflow-require]", pytrace=False)
        pytest.skip(why)


@pytest.fixture
def tcflow_lab(request: pytest.FixtureRequest) -> Iterator[Any]:
    """Namespaces and veth pairs of this test's own (tcflow.testing.Lab), removed afterwards."""
    _require(request)
    from tcflow.testing.lab import Lab

    global _made
    _made = True
    lab = Lab(f"{_prefix()}{uuid.uuid4().hex[:4]}-")
    try:
        yield lab
    finally:
        lab.close()


@pytest.fixture
def tcflow_veth(tcflow_lab: Any) -> Any:
    """Two fresh namespaces joined by a veth pair, addressed, quiet (tcflow.testing.Veth)."""
    return tcflow_lab.veth()


@pytest.fixture
def tcflow_netns(tcflow_lab: Any) -> Callable[[], str]:
    """Factory: a new empty namespace (lo up), deleted after the test; its name."""
    return tcflow_lab.netns


class _MeterFactory:
    """``tcflow_meter(interface, netns=..., pid=..., **options)``: a Meter;
    ``tcflow_meter.container(name, interface="eth0")``: one on a Docker container."""

    def __call__(self, interface: str, netns: Optional[str] = None, pid: Optional[int] = None,
                 **options: Any) -> Any:
        from tcflow.testing.meter import Meter

        return Meter(interface, netns=netns, pid=pid, **options)

    def container(self, name: str, interface: str = "eth0", **options: Any) -> Any:
        from tcflow.testing.meter import Meter

        return Meter.container(name, interface, **options)


@pytest.fixture
def tcflow_meter(request: pytest.FixtureRequest) -> _MeterFactory:
    """Factory of Meters on any interface or container (tcflow.testing.Meter)."""
    _require(request)
    return _MeterFactory()


@pytest.fixture
def tcflow_traffic() -> types.SimpleNamespace:
    """tcflow's traffic generators: ``.sockets`` (senders and sinks with exact
    tallies), ``.frames`` (crafted frames and a raw sender; needs scapy),
    ``.iperf`` (iperf3 between a pair's namespaces)."""
    import importlib

    from tcflow.testing.traffic_gen import iperf, sockets

    class _Lazy(types.SimpleNamespace):
        def __getattr__(self, name: str) -> Any:
            if name == "frames":  # scapy only when asked for
                return importlib.import_module("tcflow.testing.traffic_gen.frames")
            raise AttributeError(name)

    return _Lazy(sockets=sockets, iperf=iperf)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    from tcflow.testing import meter

    meter.finished.clear()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome: Any = yield
    report = outcome.get_result()
    if report.when != "call" or not report.failed:
        return
    from tcflow.testing import meter

    if meter.finished:
        text = "\n\n".join(m.report() for m in meter.finished)
        report.sections.append(("tcflow meter", text))
        item.user_properties.append(("tcflow_meter", text))  # JUnit XML takes them from the test's last report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    # What an interrupted test could not remove: this process's own names only.
    if _made:
        from tcflow.host.sandbox import remove_leftovers

        remove_leftovers(_prefix())
