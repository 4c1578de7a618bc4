"""Paths root can trust: every directory on the way made by root and
writable by nobody else, and directories made root-only whatever the umask.

tcflow runs as root and reads or removes what it finds at a few fixed
places (the pin directory, the kernel-header cache); a local user must not be
able to plant anything there. Errors are raised as the caller's TcflowError
subclass, with the fix.
"""

from __future__ import annotations

import os
import stat
from typing import Optional

from tcflow.model.errors import TcflowError


def _check(st: os.stat_result, path: str, final: bool, error: type[TcflowError]) -> None:
    """Only root (or whoever runs tcflow, root in practice) may have written
    ``path``: owned by them, not writable by others; a parent may be
    world-writable with the sticky bit (like /tmp), the final directory may not."""
    owners = (0, os.geteuid())
    sticky_ok = not final and st.st_mode & stat.S_ISVTX and st.st_uid in owners
    if st.st_uid not in owners or (st.st_mode & 0o022 and not sticky_ok):
        raise error(f"{path} is not safe: owned by uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):o}; "
                    "another user could have made or changed it",
                    hint=f"check what it is, remove it as root (rm -r {path}), and try again")


def trusted_dir(path: str, error: type[TcflowError]) -> bool:
    """False if ``path`` does not exist. Raises ``error`` if it is not a
    directory, or if it or any directory above it could have been made or
    changed by another user (a symlink not made by root included)."""
    so_far = ""
    st: Optional[os.stat_result] = None
    parts = [p for p in path.split("/") if p]
    for part in parts:
        so_far += "/" + part
        try:
            lst = os.lstat(so_far)
        except FileNotFoundError:
            return False
        if stat.S_ISLNK(lst.st_mode) and lst.st_uid not in (0, os.geteuid()):
            raise error(f"{so_far} is a symbolic link made by uid {lst.st_uid}",
                        hint=f"check it, remove it as root (rm {so_far}), and try again")
        try:
            st = os.stat(so_far)
        except FileNotFoundError:
            return False  # a dangling link made by root: as if absent
        _check(st, so_far, so_far == "/" + "/".join(parts), error)
    if st is None or not stat.S_ISDIR(st.st_mode):
        raise error(f"{path} is not a directory", hint="choose another place")
    return True


def make_dirs(path: str, mode: int, error: type[TcflowError]) -> None:
    """Make ``path`` and any missing parents with ``mode`` (the umask does not
    decide it), then check the whole chain as trusted_dir does."""
    missing = []
    p = path
    while p not in ("", "/") and not os.path.lexists(p):
        missing.append(p)
        p = os.path.dirname(p)
    for d in reversed(missing):
        try:
            os.mkdir(d, mode)
        except FileExistsError:
            pass  # someone made it meanwhile: checked below
        else:
            chmod_dir(d, mode)
    trusted_dir(path, error)


def chmod_dir(path: str, mode: int) -> None:
    """chmod a directory, never through a symlink put in its place."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
