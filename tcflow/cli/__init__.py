"""The command line: parse (parser.py), call one module per command, render.
The entry point is tcflow.cli.main:main. Until main() takes over, Ctrl-C ends
the command quietly (tcflow/__init__.py)."""
