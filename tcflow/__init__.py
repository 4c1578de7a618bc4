"""tcflow: per-interface traffic counters from XDP and TC eBPF programs.

    import tcflow
    with tcflow.Monitor(["veth0"], netns="ns1") as m:
        print(m.snapshot().interfaces["ns1/veth0"].bytes["L4_TCP_SEND_V4"])

    tcflow.counters()   # what `tcflow attach --pin` left counting, without bcc

The names below are imported when first used (PEP 562), so that the command
line, which imports tcflow.cli, starts without loading the engine first.
"""

from __future__ import annotations

import _signal  # the C module: `import signal` first builds its enums, a millisecond a Ctrl-C could land in
import os
import sys


def _quiet_exit(signum: int, frame: object) -> None:
    os._exit(128 + signum)


# The command (`tcflow ...`, `python -m tcflow ...`) imports this first:
# from here until its main() takes over, Ctrl-C ends it quietly (status 130;
# nothing is attached yet) instead of printing a traceback from the middle of
# an import. A library user's SIGINT is left alone, as is one the parent ignores.
if (sys.argv[:1] == ["-m"] or os.path.basename(sys.argv[0] if sys.argv else "") == "tcflow") \
        and _signal.getsignal(_signal.SIGINT) is _signal.default_int_handler:
    _signal.signal(_signal.SIGINT, _quiet_exit)

from typing import TYPE_CHECKING, Optional  # noqa: E402

from tcflow.model.lazy import exports  # noqa: E402

if TYPE_CHECKING:
    from tcflow.engine.monitor import Monitor
    from tcflow.model.classes import CLASSES, NAMES, SEED_NAMES
    from tcflow.model.errors import TcflowError
    from tcflow.model.snapshot import InterfaceCounters, Snapshot

__all__ = ["CLASSES", "NAMES", "SEED_NAMES", "InterfaceCounters", "Monitor", "Snapshot",
           "TcflowError", "__version__", "counters"]

_LAZY = {"Monitor": "tcflow.engine.monitor", "CLASSES": "tcflow.model.classes", "NAMES": "tcflow.model.classes",
         "SEED_NAMES": "tcflow.model.classes", "TcflowError": "tcflow.model.errors",
         "InterfaceCounters": "tcflow.model.snapshot", "Snapshot": "tcflow.model.snapshot",
         "__version__": "tcflow.model.version"}


__getattr__ = exports(globals(), _LAZY)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def counters(pin_dir: Optional[str] = None) -> "Snapshot":
    """The counters that pinned attachments (`tcflow attach --pin`, `serve
    --pin`) keep, read from bpffs with bpf(2) alone: no bcc, no compile.
    ``pin_dir`` defaults to $TCFLOW_PIN_DIR or /sys/fs/bpf/tcflow. Raises
    tcflow.errors.PinError if nothing is pinned there."""
    from tcflow.host.pins import default_pin_dir, read_snapshot

    return read_snapshot(pin_dir or default_pin_dir())
