"""Find kernel headers for bcc, with a fallback for kernels that ship none.

bcc compiles at run time and looks for headers at
``/lib/modules/$(uname -r)/build`` (and ``source`` beside it), or wherever
``BCC_KERNEL_SOURCE`` points. tcflow's programs use only stable UAPI structs
(ethhdr, iphdr, ipv6hdr, __sk_buff, xdp_md), so headers of another kernel
version do as well; only the layout of the kernel's own structs would differ,
and tcflow reads none.

Order, first match wins:
  1. ``BCC_KERNEL_SOURCE`` set by the user: respected as it is.
  2. Real headers for the running kernel under /lib/modules: nothing to do.
  3. ``/sys/kernel/kheaders.tar.xz`` (CONFIG_IKHEADERS): bcc unpacks it itself.
  4. Debian's split header packages (``linux-headers-*-common`` plus the
     ``-<arch>`` flavour) for another version: tcflow builds a small tree of
     symlinks that merges the two (bcc's ``BCC_KERNEL_SOURCE`` takes a single
     tree) under ``/var/cache/tcflow`` and sets ``BCC_KERNEL_SOURCE`` around its own
     compile only. Nothing outside that cache directory is changed.
"""

from __future__ import annotations

import contextlib
import glob
import os
import platform
import re
import shutil
from dataclasses import dataclass
from typing import Iterator, Optional

from tcflow.model.errors import DependencyError
from tcflow.system.safepath import chmod_dir, make_dirs, trusted_dir

CACHE_DIR = os.environ.get("TCFLOW_CACHE_DIR", "/var/cache/tcflow")
_ARCH = {"x86_64": ("amd64", "x86"), "aarch64": ("arm64", "arm64")}


@dataclass(frozen=True)
class Headers:
    """Where bcc will find kernel headers, and how tcflow found them.

    ``source`` is "env", "modules", "kheaders" or "fallback"; ``note`` is one
    line for the user (empty when nothing unusual happened).
    """

    source: str
    path: str
    note: str = ""


def _has_kconfig(tree: str) -> bool:
    return os.path.isfile(os.path.join(tree, "include/linux/kconfig.h"))


def _version_key(path: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", os.path.basename(path)))


def find_debian_split(usr_src: str = "/usr/src", machine: Optional[str] = None) -> Optional[tuple[str, str]]:
    """The newest (common, flavour) pair of Debian header dirs, if any."""
    machine = machine or platform.machine()
    if machine not in _ARCH:
        return None
    flavour = _ARCH[machine][0]
    pairs = []
    for common in glob.glob(os.path.join(usr_src, "linux-headers-*-common")):
        flav = common[: -len("-common")] + "-" + flavour
        if os.path.isdir(flav) and _has_kconfig(common):
            pairs.append((common, flav))
    if not pairs:
        return None
    return max(pairs, key=lambda p: _version_key(p[0]))


def build_merged_tree(common: str, flavour: str, dest: str, machine: Optional[str] = None) -> str:
    """Symlink ``common`` and ``flavour`` into one tree at ``dest``.

    Only the directories bcc's include flags name are merged: ``include``
    (plus the flavour's generated/ and config/) and ``arch/<arch>/include``
    (plus the flavour's generated/). Idempotent; safe to call concurrently.
    """
    arch = _ARCH[machine or platform.machine()][1]
    pairs = [
        ("include", ["generated", "config"]),
        (f"arch/{arch}/include", ["generated"]),
    ]
    tmp = f"{dest}.tmp{os.getpid()}"
    try:
        for sub, from_flavour in pairs:
            os.makedirs(os.path.join(tmp, sub), mode=0o755, exist_ok=True)
            for entry in sorted(os.listdir(os.path.join(common, sub))):
                os.symlink(os.path.join(common, sub, entry), os.path.join(tmp, sub, entry))
            for entry in from_flavour:
                src = os.path.join(flavour, sub, entry)
                if os.path.exists(src):
                    os.symlink(src, os.path.join(tmp, sub, entry))
        for sub, _ in pairs:  # 0755 whatever the umask was: the directories made here, not the links
            parts = sub.split("/")
            for i in range(len(parts) + 1):
                chmod_dir(os.path.join(tmp, *parts[:i]), 0o755)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a full disk leaves no half tree behind
        raise
    try:
        os.rename(tmp, dest)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # another process made it first; ours is identical
    return dest


def locate(environ: Optional[dict[str, str]] = None, release: Optional[str] = None,
           modules_dir: str = "/lib/modules", usr_src: str = "/usr/src",
           cache_dir: Optional[str] = None) -> Headers:
    """Decide where bcc gets headers; builds the fallback tree when needed."""
    env = os.environ if environ is None else environ
    release = release or platform.release()
    if env.get("BCC_KERNEL_SOURCE"):
        path = env["BCC_KERNEL_SOURCE"]
        if not os.path.isdir(path):
            raise DependencyError(f"BCC_KERNEL_SOURCE={path} is not a directory",
                                  hint="point it at a kernel header tree, or unset it to let tcflow find one")
        return Headers("env", path)
    kdir = os.path.join(modules_dir, release)
    for sub in ("source", "build"):
        if _has_kconfig(os.path.join(kdir, sub)):
            return Headers("modules", os.path.join(kdir, sub))
    if os.path.exists("/sys/kernel/kheaders.tar.xz"):
        return Headers("kheaders", "/sys/kernel/kheaders.tar.xz")
    split = find_debian_split(usr_src)
    if split is None:
        raise DependencyError(
            f"no kernel headers for {release}",
            hint="install them (Debian: apt-get install linux-headers-amd64), "
            "or set BCC_KERNEL_SOURCE to a kernel header tree",
        )
    common, flavour = split
    base = os.path.basename(flavour)[len("linux-headers-"):]
    cache = cache_dir or CACHE_DIR
    dest = os.path.join(cache, "kernel-headers", base)
    try:
        # Root compiles what it finds here: only a tree that no other user
        # could have changed is used; one that another could is refused.
        if not trusted_dir(dest, DependencyError) or not _has_kconfig(dest):
            make_dirs(os.path.dirname(dest), 0o755, DependencyError)
            build_merged_tree(common, flavour, dest)
            trusted_dir(dest, DependencyError)
    except OSError as e:
        raise DependencyError(f"cannot write the kernel-header cache {cache}: {e.strerror}",
                              hint="free some space there, or set TCFLOW_CACHE_DIR to a directory root can write") \
            from None
    return Headers(
        "fallback",
        dest,
        f"no headers for kernel {release}; using Debian's {base} headers "
        f"(tcflow needs only UAPI structs) via BCC_KERNEL_SOURCE={dest}",
    )


@contextlib.contextmanager
def applied(headers: Headers) -> Iterator[None]:
    """Make bcc use what ``locate`` found, for the compile inside the block.

    bcc's C++ side reads ``BCC_KERNEL_SOURCE`` from the process environment
    when it compiles; tcflow sets it only around that call and puts back what
    was there before."""
    if headers.source != "fallback":
        yield
        return
    before = os.environ.get("BCC_KERNEL_SOURCE")
    os.environ["BCC_KERNEL_SOURCE"] = headers.path
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("BCC_KERNEL_SOURCE", None)
        else:
            os.environ["BCC_KERNEL_SOURCE"] = before
