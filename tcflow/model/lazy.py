"""Names a package exports without importing their modules until one is
first used (PEP 562): the command line starts without loading the engine,
and serve's HTTP front without loading the agent's side."""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping


def exports(namespace: dict[str, Any], names: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``names`` (name -> the module that
    defines it): each is imported when first asked for, then kept in
    ``namespace`` (the package's globals())."""
    package = namespace["__name__"]

    def __getattr__(name: str) -> Any:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    return __getattr__
