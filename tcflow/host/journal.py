"""Which clsact qdiscs tcflow made: noted before it makes one.

Detach removes a clsact qdisc only if tcflow added it (someone else's stays,
with its filters). A running tcflow remembers that in memory and, with
--pin, in the pinned ``meta`` map; a tcflow killed with -9 takes that memory
with it. So tcflow writes a note here *before* it adds the qdisc, and removes
the note when it removes the qdisc: a later `tcflow detach` then knows the
qdisc is tcflow's, even after a kill between the two steps.

One empty file per qdisc, named by netns cookie (never reused) and ifindex,
in a root-only directory on the runtime tmpfs (gone at reboot, as are the
qdiscs). A note whose qdisc is gone is harmless, and dropped at the next
detach of that interface.
"""

from __future__ import annotations

import os

from tcflow.model.errors import TcflowError
from tcflow.system.safepath import make_dirs, trusted_dir

RUN_DIR = os.environ.get("TCFLOW_RUN_DIR", "/run/tcflow")


class JournalError(TcflowError):
    """The runtime directory is missing, unwritable or not root's."""


def _path(cookie: int, ifindex: int) -> str:
    return os.path.join(RUN_DIR, "clsact", f"{cookie:x}-{ifindex}")


def note(cookie: int, ifindex: int) -> None:
    """Before adding a clsact qdisc: remember that tcflow is making it."""
    make_dirs(os.path.dirname(_path(cookie, ifindex)), 0o700, JournalError)
    fd = os.open(_path(cookie, ifindex), os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    os.close(fd)


def made(cookie: int, ifindex: int) -> bool:
    """True if tcflow noted making this qdisc (and nobody else could have)."""
    try:
        return trusted_dir(os.path.dirname(_path(cookie, ifindex)), JournalError) and \
            os.path.isfile(_path(cookie, ifindex))
    except JournalError:
        return False


def forget(cookie: int, ifindex: int) -> None:
    try:
        os.unlink(_path(cookie, ifindex))
    except FileNotFoundError:
        pass
