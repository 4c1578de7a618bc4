"""tcflow's errors: one base class, subclasses carry the fields that explain them.

Imports nothing from tcflow, so every module can raise these.
"""

from __future__ import annotations

from typing import Any, Optional


class TcflowError(Exception):
    """Base class. ``hint`` says what to do about it, when there is a fix.

    Renders as ``message (ifname='veth0', hook='egress')`` with the fields
    that were given, then the hint.
    """

    def __init__(self, message: str, *, hint: Optional[str] = None, **fields: Any):
        self.message = message
        self.hint = hint
        self.fields = {k: v for k, v in fields.items() if v is not None}
        super().__init__(str(self))

    def __str__(self) -> str:
        text = self.message
        if self.fields:
            text += " (" + ", ".join(f"{k}={v!r}" for k, v in self.fields.items()) + ")"
        if self.hint:
            text += ": " + self.hint
        return text


class PermissionError_(TcflowError):
    """Not root / missing CAP_BPF, CAP_NET_ADMIN."""


class DependencyError(TcflowError):
    """bcc, libbpf or kernel headers are missing."""


class CompileError(TcflowError):
    """bcc could not compile or the verifier refused a program."""


class InterfaceError(TcflowError):
    """An interface, namespace or pid that does not exist or cannot be used."""


class AttachError(TcflowError):
    """Netlink refused an attach, or the hook is taken by another program."""


class LimitError(TcflowError):
    """More interfaces than the maps hold."""


class PinError(TcflowError):
    """bpffs missing, pins unreadable, or pinned maps of another layout."""
