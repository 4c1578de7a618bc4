"""The programs the tests run, found one way: a missing one fails the test
with the same line everywhere, naming the Debian package `make setup`
installs for it. (A skip would hide a machine that lost one.)"""

from __future__ import annotations

import shutil

import pytest

PACKAGES = {"promtool": "prometheus", "tmux": "tmux", "chromium": "chromium", "chromedriver": "chromium-driver",
            "bash": "bash", "zsh": "zsh", "fish": "fish", "man": "man-db"}


def require(tool: str) -> str:
    """The path of ``tool``, or the test fails with what to install."""
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is missing: `make setup` installs Debian's {PACKAGES.get(tool, tool)} package")
    return path
