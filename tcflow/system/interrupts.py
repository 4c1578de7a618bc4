"""Ctrl-C that never lands in the middle of a netlink exchange.

While tcflow attaches, SIGINT raises KeyboardInterrupt so that a start can
be stopped (engine/loop.Signals). Raised inside pyroute2 while a request is
on the wire, it leaves that socket's next answers out of step, and the
rollback that follows could not remove what was attached. So the steps
that talk to the kernel (attach and detach one interface) run ``shielded``:
a SIGINT meanwhile is held and raised when the step is done. Main thread
only, as signal handlers are.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Iterator

_depth = 0
_pending = False


def deliver() -> bool:
    """For the signal handler: True to raise KeyboardInterrupt now; False if
    a shielded step runs (it is raised when the step ends)."""
    global _pending
    if _depth:
        _pending = True
        return False
    return True


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Run a step that must not be cut in the middle by Ctrl-C."""
    global _depth, _pending
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        if _depth == 0 and _pending and sys.exc_info()[0] is None:
            _pending = False
            raise KeyboardInterrupt
        # leaving with an exception: it goes on; a held Ctrl-C waits for the next step's end


def clear() -> None:
    """Forget a held Ctrl-C (the signals are back to their owner)."""
    global _pending
    _pending = False
