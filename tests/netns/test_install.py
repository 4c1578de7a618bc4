"""The installed command (scripts/install.sh, run by `make setup`): on root's
PATH from a login shell and under sudo's secure_path, a copy independent of
this clone, with bash completion and the manual page; and `uninstall` leaves
nothing."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tcflow import __version__
from tests.support.cli import REPO

BIN = "/usr/local/sbin/tcflow"
SUDO_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # Debian's sudo secure_path


@pytest.fixture
def installed() -> str:
    if not os.path.exists(BIN):
        pytest.fail(f"{BIN} is missing: `make setup` installs it (scripts/install.sh)")
    return os.path.realpath(BIN)


def test_the_command_runs_by_name_from_a_login_shell_and_under_sudos_path(installed: str) -> None:
    login = subprocess.run(["env", "-i", "HOME=/root", "TERM=dumb", "bash", "-lc", "cd / && tcflow --version"],
                           capture_output=True, text=True, timeout=60)
    assert login.returncode == 0 and login.stdout.strip() == f"tcflow {__version__}", login.stderr
    doctor = subprocess.run(["env", "-i", f"PATH={SUDO_PATH}", "tcflow", "doctor"], capture_output=True, text=True,
                            cwd="/", timeout=120)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "all required checks passed" in doctor.stdout


def test_the_install_is_a_copy_not_a_link_to_this_clone(installed: str) -> None:
    prefix = os.path.dirname(os.path.dirname(installed))
    r = subprocess.run([os.path.join(prefix, "bin", "python"), "-c", "import tcflow; print(tcflow.__file__)"],
                       capture_output=True, text=True, cwd="/", check=True)
    assert r.stdout.startswith(prefix + "/") and not r.stdout.startswith(REPO)
    assert os.path.exists("/usr/share/bash-completion/completions/tcflow")
    assert os.path.exists("/usr/local/share/zsh/site-functions/_tcflow")
    assert os.path.exists("/usr/local/share/fish/vendor_completions.d/tcflow.fish")


def test_man_tcflow_opens_tcflow_8_not_termios_3(installed: str) -> None:
    """The C library documents a tcflow(3) in termios(3); tcflow's own page is
    in section 8, which man-db searches first."""
    where = subprocess.run(["man", "-w", "tcflow"], capture_output=True, text=True, timeout=60)
    assert where.returncode == 0, where.stderr  # Debian's /usr/local/man links to /usr/local/share/man
    assert os.path.realpath(where.stdout.strip()) == "/usr/local/share/man/man8/tcflow.8", where.stdout
    page = subprocess.run(["man", "-P", "cat", "tcflow"], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, MANWIDTH="80"))
    assert page.returncode == 0 and page.stdout.startswith("TCFLOW(8)"), page.stderr
    for command in ("tcflow attach", "tcflow top", "tcflow serve", "tcflow detach", "--flow-entries", "--containers"):
        assert command in page.stdout, command


def test_uninstall_leaves_nothing(installed: str, tmp_path) -> None:  # noqa: ANN001
    """On a copy of the real installation, so the machine keeps its command."""
    prefix, bindir, compdir, mandir = tmp_path / "opt", tmp_path / "sbin", tmp_path / "completions", tmp_path / "man"
    shutil.copytree(os.path.dirname(os.path.dirname(installed)), prefix, symlinks=True)
    bindir.mkdir()
    compdir.mkdir()
    (bindir / "tcflow").symlink_to(prefix / "bin" / "tcflow")
    (compdir / "tcflow").write_text("# completion\n")
    (mandir / "man8").mkdir(parents=True)
    (mandir / "man8" / "tcflow.8").write_text(".TH TCFLOW 8\n")
    zshdir, fishdir = tmp_path / "zsh", tmp_path / "fish"
    for d, f in ((zshdir, "_tcflow"), (fishdir, "tcflow.fish")):
        d.mkdir()
        (d / f).write_text("# completion\n")
    env = dict(os.environ, TCFLOW_PREFIX=str(prefix), TCFLOW_BINDIR=str(bindir), TCFLOW_COMPDIR=str(compdir),
               TCFLOW_MANDIR=str(mandir), TCFLOW_ZSHDIR=str(zshdir), TCFLOW_FISHDIR=str(fishdir))
    r = subprocess.run(["bash", "scripts/install.sh", "uninstall"], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert not prefix.exists() and list(bindir.iterdir()) == [] and list(compdir.iterdir()) == []
    assert list((mandir / "man8").iterdir()) == [] and list(zshdir.iterdir()) == [] == list(fishdir.iterdir())
