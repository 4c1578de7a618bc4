"""`tcflow doctor`: check this machine (engine/doctor.py does the checks)."""

from __future__ import annotations

import argparse

from tcflow.cli.screen import out
from tcflow.engine.doctor import report, run_checks

EXIT_OK, EXIT_ERROR = 0, 1


def run(args: argparse.Namespace) -> int:
    text, ok = report(run_checks())
    out(text)
    return EXIT_OK if ok else EXIT_ERROR
