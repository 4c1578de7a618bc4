"""tcflow's errors: one base class, subclasses carry the fields that explain them.

Imports nothing from tcflow, so every module can raise these.

An error renders in plain words: ``message (interface veth0, namespace ns1):
hint``. A hint may name a tcflow command that fixes the problem: ``fix``
holds its words (``("detach", "ns1/veth0")``) and ``{fix}`` in the hint marks
where it goes. The CLI renders it with the options the user gave (a
``--pin-dir``, say), so that pasting the hint works; ``str()`` renders it bare.
"""

from __future__ import annotations

import shlex
from typing import Any, Callable, Optional, Sequence

# How a field is named for people; anything else is shown by its own name.
FIELD_WORDS = {"ifname": "interface", "netns": "namespace", "pid": "pid", "errno": "errno",
               "hook": "hook", "path": "path"}


def shell_words(words: Sequence[str]) -> str:
    return " ".join(shlex.quote(w) for w in words)


class TcflowError(Exception):
    """Base class. ``hint`` says what to do about it, when there is a fix."""

    exit_code = 1

    def __init__(self, message: str, *, hint: Optional[str] = None, fix: Optional[Sequence[str]] = None,
                 **fields: Any):
        self.message = message
        self.hint = hint
        self.fix = tuple(fix) if fix else None
        self.fields = {k: v for k, v in fields.items() if v is not None}
        super().__init__(self.render())

    def render(self, command: Optional[Callable[[Sequence[str]], str]] = None) -> str:
        """The one-line text; ``command`` turns ``fix`` into a command line."""
        text = self.message
        if self.fields:
            text += " (" + ", ".join(f"{FIELD_WORDS.get(k, k)} {v}" for k, v in self.fields.items()) + ")"
        if self.hint:
            fix = ""
            if self.fix:
                fix = command(self.fix) if command else "tcflow " + shell_words(self.fix)
            text += ": " + self.hint.replace("{fix}", fix)
        return text

    def __str__(self) -> str:
        return self.render()


class UsageError(TcflowError):
    """The command line asks for something that cannot be done as given."""

    exit_code = 2


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
