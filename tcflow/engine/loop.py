"""The scheduler: when an agent looks at what changed, and when its owner's
``tick`` runs. attach, serve, top and Monitor users share it; the CLI only
says what a tick does (print a table, record a point).

One poll() waits on (poll, not select: a node agent holds thousands of fds,
past select's 1,024): the signal pipe, every watched namespace's link
events, and (--containers) the inotify fds that turn readable when a
runtime makes a container's cgroup or namespace file. Timers: the container
plan (every quarter second, every 10 ms for 2 s after such an event; it
reads nothing unless something started), the flow tick (rates and
eviction, once a second) and the caller's tick.
"""

from __future__ import annotations

import contextlib
import math
import os
import select
import signal
import time
from typing import Any, Callable, ContextManager, Iterable, Iterator, Optional

from tcflow.engine.agent import Agent
from tcflow.model.errors import InterfaceError
from tcflow.model.targets import Target
from tcflow.system import interrupts

CONTAINER_SCAN_S = 0.25  # --containers: how often discovery is asked for its plan
BURST_S, BURST_EVERY_S = 2.0, 0.01  # after a container event: every 10 ms for 2 s
FLOW_TICK_S = 1.0  # --flows: rates and eviction, once a second
# serve: a snapshot (a scrape, the dashboard's step) takes the flows from the
# tick's read of the table when it is at most this old; it says how old
FLOWS_SHARED_S = 2 * FLOW_TICK_S


class Signals:
    """SIGINT/SIGTERM/SIGHUP: raise KeyboardInterrupt while attaching (before
    ``looping``), then only stop the loop, which wakes at once."""

    def __init__(self) -> None:
        self.stop = False
        self.looping = False
        self.rfd, self.wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.saved: dict[int, Any] = {}

    def __enter__(self) -> "Signals":
        self.pid = os.getpid()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            self.saved[sig] = signal.signal(sig, self._on)
        self.saved_wakeup = signal.set_wakeup_fd(self.wfd)
        return self

    def _on(self, signum: int, frame: object) -> None:
        if os.getpid() != self.pid:
            # a forked child (a library's helper process) inherited this
            # handler: it must die as by default, never unwind into tcflow
            os._exit(128 + signum)
        self.stop = True
        if not self.looping and interrupts.deliver():  # never inside a netlink exchange (system/interrupts.py)
            raise KeyboardInterrupt

    def drain(self) -> None:
        try:
            os.read(self.rfd, 512)
        except BlockingIOError:
            pass

    def __exit__(self, *exc: Any) -> None:
        interrupts.clear()
        signal.set_wakeup_fd(self.saved_wakeup)
        for sig, h in self.saved.items():
            signal.signal(sig, h)
        os.close(self.rfd)
        os.close(self.wfd)


@contextlib.contextmanager
def started(agent: Agent, targets: Iterable[Target], sink: Callable[[str], None]) -> Iterator[Signals]:
    """Signals handled (one during the start interrupts it), the agent started
    and its first notices out; from then on a signal only stops the loop.
    The agent is closed at the end, whatever happens."""
    with Signals() as sig:
        try:
            # inside the try: a Ctrl-C between the start's return and the try
            # would otherwise leave what it attached (a failed start undid its
            # own work; closing it again is harmless)
            agent.start(targets)
            flush_notices(agent, sink)
            sig.looping = True
            yield sig
        finally:
            agent.close()


def flush_notices(agent: Agent, sink: Callable[[str], None]) -> None:
    for text in agent.notices:
        sink(text)
    agent.notices.clear()


def _wait(fds: list[int], timeout_s: float) -> set[int]:
    """The fds readable (or hung up) within ``timeout_s``."""
    p = select.poll()
    for fd in fds:
        p.register(fd, select.POLLIN)
    return {fd for fd, _ in p.poll(timeout_s * 1000)}


def run(agent: Agent, sig: Signals, interval: float, tick: Callable[[], bool],
        guard: Callable[[], ContextManager[Any]], sink: Callable[[str], None],
        inputs: Optional[dict[int, Callable[[], bool]]] = None) -> None:
    """Until a signal (or ``tick`` returns False): follow interface changes in
    every namespace, let go of deleted namespaces, apply container discovery,
    call ``tick`` every ``interval``. ``guard`` is held while the agent
    changes (readers take it too); notices go to ``sink``. ``inputs``: more
    fds to wait on (a terminal's keys), each with what to call when it is
    readable; that returning False ends the run too."""
    inputs = inputs or {}
    following = agent.following()
    containers = agent.discovery
    now = time.monotonic()
    due = now + interval
    scan_due = now + CONTAINER_SCAN_S if containers is not None else math.inf
    flows_due = now + FLOW_TICK_S if agent.flows is not None else math.inf
    burst_until = 0.0
    files = containers.fds() if containers is not None else []
    while not sig.stop:
        fds = agent.event_fds()
        wake = min(due, scan_due, flows_due)
        ready = _wait([sig.rfd, *fds, *files, *inputs], max(0.0, wake - time.monotonic()))
        if sig.rfd in ready:
            sig.drain()
        if sig.stop or not all(inputs[fd]() for fd in ready if fd in inputs):
            break
        if containers is not None and any(fd in ready for fd in files):
            containers.drain()
            burst_until = time.monotonic() + BURST_S
            scan_due = time.monotonic()
        with guard():
            for fd in ready:
                if fd in fds:
                    agent.sync(fds[fd])
            lost = agent.unwatch_deleted()
            if time.monotonic() >= scan_due:
                agent.discover()
                now = time.monotonic()
                # between bursts, CONTAINER_SCAN_S, or with cgroup events as long as
                # discovery has nothing to do (an event wakes the loop meanwhile)
                scan_due = now + (BURST_EVERY_S if now < burst_until else
                                  max(CONTAINER_SCAN_S, containers.quiet_s() if containers is not None else 0.0))
            agent.refresh_peers()
        if containers is not None:
            agent.load_spare_set()
            lost = []  # containers come and go: that is no news
        if time.monotonic() >= flows_due:
            with guard():
                agent.tick_flows()
            flows_due = max(flows_due + FLOW_TICK_S, time.monotonic())
        for label in lost:
            agent.notices.append(f"network namespace {label} was deleted; tcflow let it go")
        flush_notices(agent, sink)
        if lost and not agent.watches and containers is None:
            raise InterfaceError("the network namespace was deleted", netns=", ".join(lost),
                                 hint="tcflow detached and let it go; attach again in a new namespace")
        if not agent.interfaces() and not following:
            if agent.lost_hooks:
                raise InterfaceError("nothing is counted any more: tcflow's hooks were removed by another process",
                                     hint="see `tcflow status`; attach again to count again")
            raise InterfaceError("every attached interface is gone", hint="attach again, or use --match "
                                 "with --follow to wait for interfaces to appear")
        if time.monotonic() >= due:
            if not tick():
                break
            due += interval
            if due < time.monotonic():  # fell behind (suspended?): do not burst
                due = time.monotonic() + interval
