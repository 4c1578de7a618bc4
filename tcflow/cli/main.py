"""tcflow's command line. main(argv) -> exit status: parse (parser.py),
call the command's module (one per command), render; the work lives in the
engine and the output layers.

Every failure the user can fix is a TcflowError, printed as one line
``tcflow: error: ...`` with the fix (exit 1; 2 for a usage error); anything
else is a bug, printed as one line too unless --debug asks for the traceback.

Each command imports its heavier parts (the HTTP server and prometheus_client,
the table, the doctor) when it runs, so that `--help`, `status` and `show`
start quickly.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from typing import Optional, Sequence

from tcflow.cli.completion import SHELLS
from tcflow.cli.parser import fix_command, parser
from tcflow.cli.screen import Exit, OutputClosed, out
from tcflow.model.errors import TcflowError
from tcflow.model.names import printable

# command -> the module whose run(args) does it
COMMANDS = {"attach": "attach", "top": "top", "serve": "serve", "show": "show", "status": "status",
            "detach": "detach", "doctor": "doctor", "demo": "demo"}


def completion(args: argparse.Namespace) -> int:
    out(SHELLS[args.shell](parser()), end="")
    return Exit.OK


def dispatch(args: argparse.Namespace) -> int:
    if args.command == "completion":
        return completion(args)
    module = importlib.import_module(f"tcflow.cli.{COMMANDS[args.command]}")
    return int(module.run(args))


def _quiet_stdout() -> None:
    """Point fd 1 at /dev/null, so that Python's flush at exit finds no closed pipe to complain about."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _unraisable_quiet(unraisable: object) -> None:
    """An error in a finaliser (a library's half-made object after a Ctrl-C,
    say) is no error of the command's: said only with --debug."""


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parser().parse_args(argv)
    if not args.debug:
        sys.unraisablehook = _unraisable_quiet
    try:
        if getattr(signal.getsignal(signal.SIGINT), "__module__", None) == "tcflow":  # tcflow/__init__.py's
            signal.signal(signal.SIGINT, signal.default_int_handler)  # from here, main() handles Ctrl-C
        return dispatch(args)
    except TcflowError as e:
        if args.debug:
            raise
        print(f"tcflow: error: {printable(e.render(lambda words: fix_command(args, words)))}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return Exit.INTERRUPTED
    except OutputClosed:
        _quiet_stdout()
        return Exit.OK
    except Exception as e:  # a bug, or something tcflow did not foresee
        if args.debug:
            raise
        text = printable(" ".join(str(e).split()) or type(e).__name__)
        print(f"tcflow: error: {type(e).__name__}: {text} (run with --debug for the traceback, and please "
              "report it)", file=sys.stderr)
        return Exit.ERROR
