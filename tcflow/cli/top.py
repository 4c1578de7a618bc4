"""`tcflow top`: the busiest flows (five-tuples) live, like iftop.

The view (output/top.py) keeps the averages, totals, filters and sort; this
module feeds it a snapshot every interval, draws it, and hands it the keys
typed on a terminal (the loop waits on them with everything else)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import termios
import threading
import time
import tty
from typing import Iterator, Optional

from tcflow.cli.parser import mode_of, settings_of
from tcflow.cli.screen import Exit, Live, out, terminal_size
from tcflow.engine import loop
from tcflow.engine.agent import Agent
from tcflow.engine.privileges import require
from tcflow.output.top import Filters, View

FLOWS_READ = 500  # flows per interface the view reads a tick (its averages need more than fit)
JSON_TOP = 24


@contextlib.contextmanager
def keyboard(on: bool) -> Iterator[Optional[int]]:
    """The terminal's keys one at a time, unechoed (Ctrl-C still a signal); restored after."""
    fd = sys.stdin.fileno() if on else -1
    saved = None
    if on:
        try:
            saved = termios.tcgetattr(fd)
            tty.setcbreak(fd)
        except (termios.error, OSError):
            saved = None
    try:
        yield fd if saved is not None else None
    finally:
        if saved is not None:
            try:
                termios.tcsetattr(fd, termios.TCSADRAIN, saved)
            except termios.error:
                pass  # the terminal is gone: nothing to restore


def run(args: argparse.Namespace) -> int:
    settings, targets = settings_of(args)
    require(mode_of(args))
    agent = Agent(settings)
    live = Live(not args.json and sys.stdout.isatty())
    view = View(Filters(port=args.port, host=args.host, proto=args.proto, where=args.where), args.sort, args.units)
    agent.flows_top = max(FLOWS_READ, args.top)
    shown = [0]

    def draw() -> None:
        size = terminal_size()
        live.draw(view.screen(size.columns, size.lines, live.kept))

    def emit() -> bool:
        view.update(agent.snapshot())
        if args.json:
            out(json.dumps(view.document(args.top or JSON_TOP)))
        elif live.on:
            draw()
        else:
            head = f"# {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(view.snap.time if view.snap else 0))}"
            out("\n".join([head, *view.table(120, (args.top or JSON_TOP) + 2), *view.totals_lines(120)]) + "\n")
        shown[0] += 1
        return not (args.count and shown[0] >= args.count)

    with loop.started(agent, targets, live.notice) as sig, keyboard(live.on and sys.stdin.isatty()) as keys:
        def typed() -> bool:
            assert keys is not None
            try:
                data = os.read(keys, 64)
            except OSError:
                return True
            for ch in data.decode(errors="replace"):
                if not view.key(ch):
                    return False
            draw()
            return True

        try:
            live.enter()
            view.update(agent.snapshot())  # the start: every average counts from here
            if live.on:  # the first screen at once; its averages fill in
                draw()
            loop.run(agent, sig, args.interval, emit, threading.Lock, live.notice,
                     {keys: typed} if keys is not None else None)
        finally:
            live.leave()
    return Exit.OK
