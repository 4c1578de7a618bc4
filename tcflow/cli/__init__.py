"""The command line: parse (parser.py), call one module per command, render.
The entry point is tcflow.cli.main:main."""
