"""tcflow: per-interface traffic counters from XDP and TC eBPF programs.

    import tcflow
    with tcflow.Monitor(["veth0"], netns="ns1") as m:
        print(m.snapshot().interfaces["ns1/veth0"].bytes["L4_TCP_SEND_V4"])

    tcflow.counters()   # what `tcflow attach --pin` left counting, without bcc
"""

from typing import Optional

from tcflow.engine.monitor import Monitor  # noqa: E402
from tcflow.host.pins import default_pin_dir, read_snapshot  # noqa: E402
from tcflow.model.classes import CLASSES, NAMES, SEED_NAMES  # noqa: E402
from tcflow.model.errors import TcflowError  # noqa: E402
from tcflow.model.snapshot import InterfaceCounters, Snapshot  # noqa: E402
from tcflow.model.version import __version__  # noqa: E402

__all__ = ["CLASSES", "NAMES", "SEED_NAMES", "InterfaceCounters", "Monitor", "Snapshot",
           "TcflowError", "__version__", "counters"]


def counters(pin_dir: Optional[str] = None) -> Snapshot:
    """The counters that pinned attachments (`tcflow attach --pin`, `serve
    --pin`) keep, read from bpffs with bpf(2) alone: no bcc, no compile.
    ``pin_dir`` defaults to $TCFLOW_PIN_DIR or /sys/fs/bpf/tcflow. Raises
    tcflow.errors.PinError if nothing is pinned there."""
    return read_snapshot(pin_dir or default_pin_dir())
