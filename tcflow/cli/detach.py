"""`tcflow detach`: remove tcflow from interfaces (pinned, or left by a
tcflow that was killed)."""

from __future__ import annotations

import argparse

from tcflow.cli.parser import mode_of
from tcflow.cli.screen import Exit, out
from tcflow.engine.privileges import require
from tcflow.engine.status import detach_all, detach_named, detach_stale
from tcflow.model.errors import UsageError
from tcflow.model.targets import Where


def run(args: argparse.Namespace) -> int:
    if sum((bool(args.all), bool(args.stale), bool(args.interfaces))) != 1:
        raise UsageError("name the interfaces to detach, or give --all or --stale (one of the three)",
                         hint="e.g. `tcflow detach eth1`, `tcflow detach ns1/veth0` or `tcflow detach --all`")
    require(mode_of(args))
    if args.all:
        lines = detach_all(args.pin_dir, force=args.force)
    elif args.stale:
        lines = detach_stale(args.pin_dir)
    else:
        lines = detach_named(args.interfaces, Where(args.netns, args.pid), args.pin_dir, force=args.force)
    for line in lines:
        out(line)
    return Exit.OK


