"""What the CLI writes: one-line notes on stderr, output that ends quietly
when its reader goes (`| head -1`), and the live screen's escapes and
notices."""

from __future__ import annotations

import argparse
import enum
import os
import shutil
import sys
import time
from typing import Any

from tcflow.cli.parser import fix_command
from tcflow.model.errors import TcflowError
from tcflow.model.names import printable


def note(text: str) -> None:
    print(f"tcflow: {printable(text)}", file=sys.stderr, flush=True)


class OutputClosed(Exception):
    """Whoever read standard output has gone (`| head -1`): stop, quietly."""


def out(text: str, end: str = "\n") -> None:
    """Write to standard output. A closed pipe ends tcflow quietly (after its
    clean-up); any other failure to write is a one-line error."""
    try:
        sys.stdout.write(text + end)
        sys.stdout.flush()
    except BrokenPipeError:
        raise OutputClosed from None
    except OSError as e:
        raise TcflowError(f"cannot write to standard output: {e.strerror}",
                          hint="check where the output goes (a full disk?)") from None


class Notices(list[str]):
    """The last few notices of a live screen, each with its time."""

    def keep(self, text: str) -> None:
        self.append(f"{time.strftime('%H:%M:%S')} {printable(text)}")
        del self[:-3]


ALT_SCREEN_ON, ALT_SCREEN_OFF = "\x1b[?1049h", "\x1b[?1049l"
HOME, CLEAR_LINE, CLEAR_BELOW = "\x1b[H", "\x1b[K", "\x1b[J"


def terminal_size() -> os.terminal_size:
    """The terminal's own size (a resize shows at the next draw); COLUMNS and
    LINES only when standard output is not a terminal (they go stale)."""
    try:
        return os.get_terminal_size(sys.stdout.fileno())
    except (OSError, ValueError):
        return shutil.get_terminal_size()


class Live:
    """A screen redrawn in place on the alternate screen (nothing piles up in
    the scrollback), with the last few notices kept at its bottom; or, when
    ``on`` is False (a pipe, a file, --json), notices on stderr as they come."""

    def __init__(self, on: bool):
        self.on = on
        self.kept = Notices()

    def notice(self, text: str) -> None:
        if self.on:
            self.kept.keep(text)
        else:
            note(text)

    def enter(self) -> None:
        if self.on:
            out(ALT_SCREEN_ON, end="")

    def draw(self, text: str) -> None:
        """Each line clears what a longer one left before it, then everything below goes."""
        out(HOME + (CLEAR_LINE + "\n").join(text.split("\n")) + CLEAR_LINE + CLEAR_BELOW, end="")

    def leave(self) -> None:
        """Back to the normal screen; the kept notices go to stderr."""
        if self.on:
            out(ALT_SCREEN_OFF, end="")
            for text in self.kept:
                note(text)


class Exit(enum.IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2
    INTERRUPTED = 130


def attached_line(agent: Any) -> str:
    return ", ".join(interface.key for interface in agent.interfaces()) or "nothing yet"


def left_pinned(args: argparse.Namespace, agent: Any) -> None:
    if not agent.left_attached:
        return  # nothing was left attached (its hooks were removed, or it went)
    note(f"left attached; counters stay pinned under {agent.pin_dir}: "
         f"`{fix_command(args, ('show',))}` reads them, `{fix_command(args, ('detach', '--all'))}` removes them")
