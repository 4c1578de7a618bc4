"""tcflow: per-interface traffic counters from XDP and TC eBPF programs.

    import tcflow
    with tcflow.Monitor(["veth0"], netns="ns1") as m:
        print(m.snapshot().interfaces["ns1/veth0"].bytes["L4_TCP_SEND_V4"])
"""

from .classes import CLASSES, NAMES, SEED_NAMES
from .counters import InterfaceCounters, Snapshot
from .errors import TcflowError
from .monitor import Monitor

__version__ = "0.1.0"

__all__ = ["CLASSES", "NAMES", "SEED_NAMES", "InterfaceCounters", "Monitor", "Snapshot",
           "TcflowError", "__version__", "counters"]


def counters(interfaces: list[str], netns: str | None = None, **kwargs: object) -> Snapshot:
    """Attach, take one snapshot, detach. For scripts; a Monitor keeps counting."""
    with Monitor(interfaces, netns=netns, **kwargs) as m:  # type: ignore[arg-type]
        return m.snapshot()
