"""`tcflow attach`: attach, then print the counters every interval (a live
table on a terminal, a dated table in a pipe, JSON lines with --json)."""

from __future__ import annotations

import argparse
import json
import sys
import threading
from typing import Optional

from tcflow.cli.parser import mode_of, settings_of
from tcflow.cli.screen import Exit, Live, attached_line, left_pinned, note, out, terminal_size
from tcflow.engine import loop
from tcflow.engine.agent import Agent
from tcflow.engine.privileges import require
from tcflow.model.errors import InterfaceError
from tcflow.model.snapshot import Snapshot, document
from tcflow.output.table import header, render, screen


def run(args: argparse.Namespace) -> int:
    settings, targets = settings_of(args)
    require(mode_of(args))
    agent = Agent(settings)
    live = Live(not args.json and sys.stdout.isatty())
    shown = [0]
    prev: list[Optional[Snapshot]] = [None, None]  # the last snapshot, and the one before it

    def emit() -> bool:
        snap = agent.snapshot()
        if args.json:
            out(json.dumps(document(snap)))
        elif live.on:
            size = terminal_size()
            live.draw(screen(snap, prev[0], args.interval, args.units, size.columns, size.lines, live.kept))
        else:  # a pipe or a file: every snapshot says when it was taken
            out(header(snap, args.interval, footer="") + "\n" + render(snap, prev[0], args.units) + "\n")
        prev[1], prev[0] = prev[0], snap
        shown[0] += 1
        return not (args.count and shown[0] >= args.count)

    attached = False
    try:
        with loop.started(agent, targets, live.notice) as sig:
            attached = True
            try:
                if not args.json and not live.on:
                    note(f"attached to {attached_line(agent)}; Ctrl-C to stop")
                live.enter()
                if emit():
                    try:
                        loop.run(agent, sig, args.interval, emit, threading.Lock, live.notice)
                    except InterfaceError:
                        emit()  # what was counted up to the loss
                        raise
                    if sig.stop:
                        emit()  # the last word on SIGINT/SIGTERM
            finally:  # the agent is detached after this, even when the terminal is gone
                if live.on:
                    live.leave()
                    if prev[0] is not None:  # the last screen stays readable after exit
                        out(render(prev[0], prev[1], args.units))
    finally:
        if args.pin and attached:
            left_pinned(args, agent)
    return Exit.OK


