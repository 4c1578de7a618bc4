"""A hostile local user (`nobody`, via setpriv) against root's tcflow.

Each attack runs in a bpffs of the test's own, mounted world-writable (mode
1777, as an earlier set-up left /sys/fs/bpf) in a temporary directory, so
that nobody can plant things next to the pin directory; and with kernel-header
caches of the test's own. None of them may make root's tcflow delete, block
or compile anything it should not: each gets a one-line refusal.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import Iterator

import pytest

from tcflow.host.sandbox import VethPair
from tests.support.cli import REPO, Live, leftovers, one_line_error, run
from tests.support.counting import key

NOBODY = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")


def as_nobody(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([*NOBODY, *argv], capture_output=True, text=True, timeout=60)


@pytest.fixture
def bpffs() -> Iterator[str]:
    """A private bpf filesystem, world-writable with the sticky bit."""
    path = tempfile.mkdtemp(prefix="tcft-bpffs-")
    os.chmod(path, 0o755)
    subprocess.run(["mount", "-t", "bpf", "bpf", path, "-o", "mode=1777"], check=True)
    try:
        yield path
    finally:
        for entry in os.listdir(path):
            pin_dir = os.path.join(path, entry)
            if os.path.isdir(pin_dir) and not os.path.islink(pin_dir):
                run("detach", "--all", "--pin-dir", pin_dir)
        subprocess.run(["umount", "-l", path], check=False)
        os.rmdir(path)


@pytest.fixture
def victim() -> Iterator[str]:
    """Root's files, named like tcflow's pins, somewhere a symlink could point."""
    path = tempfile.mkdtemp(prefix="tcft-victim-")
    for name in ("meta", "counters", "ifaces"):
        with open(os.path.join(path, name), "w") as f:
            f.write("root's data\n")
    yield path
    subprocess.run(["rm", "-rf", path], check=False)


def test_symlink_planted_as_the_pin_dir_is_refused(bpffs: str, victim: str, silent_pair: VethPair) -> None:
    pin_dir = os.path.join(bpffs, "tcflow")
    assert as_nobody("ln", "-s", victim, pin_dir).returncode == 0
    for argv in (("detach", "--all"), ("show",), ("attach", "--pin", key(silent_pair), "--count", "1")):
        r = run(*argv, "--pin-dir", pin_dir)
        one_line_error(r, "symbolic link made by uid 65534")
    assert sorted(os.listdir(victim)) == ["counters", "ifaces", "meta"]  # nothing deleted
    assert leftovers(silent_pair.ns_a, silent_pair.dev_a) == []


def test_pin_dir_made_by_another_user_is_refused(bpffs: str, silent_pair: VethPair) -> None:
    pin_dir = os.path.join(bpffs, "tcflow")
    assert as_nobody("mkdir", pin_dir).returncode == 0
    r = run("attach", "--pin", "--pin-dir", pin_dir, key(silent_pair), "--count", "1")
    one_line_error(r, f"{pin_dir} is not safe", "owned by uid 65534")
    one_line_error(run("detach", "--all", "--pin-dir", pin_dir), "owned by uid 65534")
    assert leftovers(silent_pair.ns_a, silent_pair.dev_a) == []


def test_nobody_cannot_lock_or_read_root_pins_and_sigterm_ends_a_waiting_attach(
        bpffs: str, silent_pair: VethPair, sandbox) -> None:  # noqa: ANN001
    pin_dir = os.path.join(bpffs, "tcflow")
    p = silent_pair
    r = run("attach", "--pin", "--pin-dir", pin_dir, key(p), "--count", "1", "--json")
    assert r.returncode == 0, r.stderr
    assert os.stat(pin_dir).st_mode & 0o777 == 0o700
    grab = as_nobody(sys.executable, "-c", f"import fcntl, os; fcntl.flock(os.open({pin_dir!r}, os.O_RDONLY), "
                                           "fcntl.LOCK_EX)")
    assert grab.returncode != 0 and "PermissionError" in grab.stderr
    # root holds the lock (another tcflow, say): a SIGTERM still ends a waiting attach at once
    other = sandbox.pair(addresses=False)
    fd = os.open(pin_dir, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        waiting = Live("attach", "--pin", "--pin-dir", pin_dir, key(other), "--json")
        time.sleep(1.0)
        assert waiting.p.poll() is None  # blocked on the lock, not failed
        t0 = time.monotonic()
        waiting.signal(signal.SIGTERM)
        waiting.p.wait(timeout=10)
        assert time.monotonic() - t0 < 5
        assert waiting.p.returncode == 130
        assert leftovers(other.ns_a, other.dev_a) == []
    finally:
        os.close(fd)
        waiting.kill()
    r = run("detach", "--all", "--pin-dir", pin_dir)
    assert r.returncode == 0 and f"detached {key(p)}" in r.stdout, r.stderr
    assert leftovers(p.ns_a, p.dev_a, pin_dir) == []


def test_two_pinned_attaches_at_once_both_succeed_and_a_failing_one_removes_nothing(
        bpffs: str, sandbox) -> None:  # noqa: ANN001
    pin_dir = os.path.join(bpffs, "tcflow")
    pairs = [sandbox.pair(addresses=False) for _ in range(2)]
    procs = [subprocess.Popen([sys.executable, "-m", "tcflow", "attach", "--pin", "--pin-dir", pin_dir, key(p),
                               "--count", "1", "--json"], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for p in pairs]
    outs = [pr.communicate(timeout=120) for pr in procs]
    assert [pr.returncode for pr in procs] == [0, 0], [o[1] for o in outs]
    bad = run("attach", "--pin", "--pin-dir", pin_dir, f"{pairs[0].ns_a}/tcf-nope")
    one_line_error(bad, "no such interface")
    shown = run("show", "--json", "--pin-dir", pin_dir)
    assert shown.returncode == 0, shown.stderr
    import json

    assert set(json.loads(shown.stdout)["interfaces"]) == {key(p) for p in pairs}  # the failure removed no pin
    r = run("detach", "--all", "--pin-dir", pin_dir)
    assert r.returncode == 0, r.stderr
    for p in pairs:
        assert leftovers(p.ns_a, p.dev_a, pin_dir) == []


def test_a_foreign_map_in_the_pin_dir_survives_a_failed_attach(bpffs: str, silent_pair: VethPair) -> None:
    pin_dir = os.path.join(bpffs, "tcflow")
    os.mkdir(pin_dir, 0o700)
    made = subprocess.run(["bpftool", "map", "create", os.path.join(pin_dir, "counters"), "type", "array",
                           "key", "4", "value", "8", "entries", "1", "name", "counters"], capture_output=True,
                          text=True)
    assert made.returncode == 0, made.stderr
    r = run("attach", "--pin", "--pin-dir", pin_dir, key(silent_pair), "--count", "1")
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert os.path.exists(os.path.join(pin_dir, "counters"))  # not tcflow's: left where it was
    assert leftovers(silent_pair.ns_a, silent_pair.dev_a) == []
    os.unlink(os.path.join(pin_dir, "counters"))


def test_pins_of_the_older_counter_layout_are_refused_not_misread(bpffs: str, silent_pair: VethPair) -> None:
    """Before the {bytes, packets} cells, a slot was all bytes then all packets:
    the same size, another meaning. Such pins are refused, never read as cells."""
    pin_dir = os.path.join(bpffs, "tcflow")
    os.mkdir(pin_dir, 0o700)
    for name, kind, ksize, vsize in (("ifaces", "hash", 16, 8), ("counters", "percpu_array", 4, 416),
                                     ("meta", "array", 4, 296)):
        made = subprocess.run(["bpftool", "map", "create", os.path.join(pin_dir, name), "type", kind, "key",
                               str(ksize), "value", str(vsize), "entries", "4096", "name", name],
                              capture_output=True, text=True)
        assert made.returncode == 0, made.stderr
    for argv in (["show", "--pin-dir", pin_dir], ["attach", "--pin", "--pin-dir", pin_dir, key(silent_pair),
                                                   "--count", "1"]):
        r = run(*argv)
        assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "layout" in r.stderr and "detach --all" in r.stderr, r.stderr
    assert leftovers(silent_pair.ns_a, silent_pair.dev_a) == []
    assert sorted(os.listdir(pin_dir)) == ["counters", "ifaces", "meta"]  # nothing removed behind the user


def test_header_cache_writable_by_others_is_refused_and_umask_000_makes_it_root_only(
        silent_pair: VethPair, tmp_path) -> None:  # noqa: ANN001
    if os.path.exists("/sys/kernel/kheaders.tar.xz") or os.path.exists(f"/lib/modules/{os.uname().release}/build"):
        pytest.skip("this kernel has its own headers: tcflow makes no header cache here")
    planted = tmp_path / "planted"
    planted.mkdir()
    os.chmod(planted, 0o777)  # as umask 000 used to leave it; nobody could replace a header in it
    env = dict(os.environ, TCFLOW_CACHE_DIR=str(planted))
    one_line_error(run("attach", key(silent_pair), "--count", "1", env=env), f"{planted} is not safe")
    fresh = tmp_path / "fresh"
    r = subprocess.run(["sh", "-c", 'umask 000 && exec "$@"', "-", sys.executable, "-m", "tcflow", "attach",
                        key(silent_pair), "--count", "1", "--json"], cwd=REPO, capture_output=True, text=True,
                       env=dict(os.environ, TCFLOW_CACHE_DIR=str(fresh)), timeout=120)
    assert r.returncode == 0, r.stderr
    for d in (fresh, fresh / "kernel-headers"):
        assert d.stat().st_mode & 0o022 == 0, oct(d.stat().st_mode)
    assert leftovers(silent_pair.ns_a, silent_pair.dev_a) == []


def test_names_that_are_not_utf8_or_carry_escapes_are_counted_and_shown_escaped(
        sandbox, pin_env: dict[str, str]) -> None:  # noqa: ANN001
    """Interface and namespace names any container root can pick: tcflow
    matches them, counts them, shows them as \\xNN (never raw bytes or escape
    sequences), takes the shown form back, and detaches them."""
    import json

    ns = sandbox.netns()
    odd_ns = ns + "\udcff"  # a namespace whose name is not UTF-8 (byte 0xff)
    subprocess.run(["ip", "netns", "add", os.fsencode(odd_ns)], check=True)
    try:
        subprocess.run([b"ip", b"-n", ns.encode(), b"link", b"add", b"\xff\xfe", b"type", b"veth", b"peer", b"name",
                        b"e\x1b[31mx"], check=True)
        subprocess.run([b"ip", b"-n", os.fsencode(odd_ns), b"link", b"add", b"caf\xc3\xa9", b"type", b"veth",
                        b"peer", b"name", b"bel\x07l"], check=True)
        r = run("attach", "--pin", "--netns", ns, "--match", "*", "--count", "1", "--json", env=pin_env)
        assert r.returncode == 0, r.stderr
        keys = set(json.loads(r.stdout)["interfaces"])
        assert keys == {f"{ns}/\\xff\\xfe", f"{ns}/e\\x1b[31mx"}
        shown_ns = ns + "\\xff"
        r = run("attach", "--pin", f"{shown_ns}/café", f"{shown_ns}/bel\\x07l", "--count", "1", env=pin_env)
        assert r.returncode == 0, r.stderr
        for argv in (("status",), ("show",), ("status", "--json"), ("show", "--json")):
            r = run(*argv, env=pin_env)
            assert r.returncode == 0, r.stderr
            assert "\x1b" not in r.stdout + r.stderr and "\udcff" not in r.stdout
            text = "\n".join(_strings(json.loads(r.stdout))) if "--json" in argv else r.stdout
            assert "\\xff\\xfe" in text and "café" in text and "bel\\x07l" in text
        r = run("detach", f"{shown_ns}/café", env=pin_env)  # the shown form is taken back
        assert r.returncode == 0 and f"detached {shown_ns}/café" in r.stdout, r.stderr
        r = run("detach", "--all", env=pin_env)
        assert r.returncode == 0, r.stderr
        assert r.stdout.count("detached") == 3 and "\x1b" not in r.stdout
    finally:
        subprocess.run(["ip", "netns", "del", os.fsencode(odd_ns)], check=False)


def _strings(doc: object) -> list[str]:
    """Every key and string value in a JSON document."""
    if isinstance(doc, dict):
        return [s for k, v in doc.items() for s in (str(k), *_strings(v))]
    if isinstance(doc, list):
        return [s for v in doc for s in _strings(v)]
    return [doc] if isinstance(doc, str) else []
