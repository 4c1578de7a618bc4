"""The version, one place: the package, `tcflow --version` and /metrics say it."""

__version__ = "0.2.0"
