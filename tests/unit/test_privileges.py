"""engine/privileges.py: the least set that meets a mode's needs, what a
process lacks, and the one line that names it (the table itself is measured
in tests/netns/test_capabilities.py)."""

from __future__ import annotations

from unittest import mock

import pytest

from tcflow.engine import privileges as pv
from tcflow.model.errors import PermissionError_


def bits(*caps: str) -> int:
    return sum(1 << pv.NUMBERS[c] for c in caps)


def test_sys_admin_covers_bpf_and_perfmon_in_the_grant_and_the_check() -> None:
    containers = pv.needs(pv.Mode(load=True, netns=True, proc=True))
    assert pv.grant(containers) == ["CAP_NET_ADMIN", "CAP_SYS_PTRACE", "CAP_SYS_ADMIN"]
    assert pv.missing(containers, bits("CAP_NET_ADMIN", "CAP_SYS_PTRACE", "CAP_SYS_ADMIN")) == []
    assert [n.cap for n in pv.missing(containers, bits("CAP_NET_ADMIN", "CAP_SYS_ADMIN"))] == ["CAP_SYS_PTRACE"]
    own = pv.needs(pv.Mode(load=True))
    assert [n.cap for n in pv.missing(own, bits("CAP_BPF", "CAP_NET_ADMIN"))] == ["CAP_PERFMON"]


def test_each_capability_is_named_once_with_its_first_reason() -> None:
    mode = pv.Mode(load=True, netns=True, mount=True)
    lacking = pv.missing(pv.needs(mode), bits("CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN"))
    assert [(n.cap, n.why) for n in lacking] == [("CAP_SYS_ADMIN", pv.SETNS.why)]


def test_require_is_one_line_naming_what_is_missing_and_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(pv.UNSET, raising=False)
    with mock.patch.object(pv, "effective", return_value=bits("CAP_BPF", "CAP_PERFMON")), \
            pytest.raises(PermissionError_) as e:
        pv.require(pv.Mode(load=True, front=True))
    text = f"{e.value.message}: {e.value.hint}"
    assert "\n" not in text
    for cap in ("CAP_NET_ADMIN", "CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP"):
        assert cap in e.value.message
    assert "CAP_BPF" not in e.value.message and "grant them" in text


def test_a_user_without_capabilities_is_told_to_use_sudo_and_root_without_them_is_told_which(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(pv.UNSET, raising=False)
    with mock.patch.object(pv, "effective", return_value=0), mock.patch("os.geteuid", return_value=1000), \
            pytest.raises(PermissionError_) as e:
        pv.require(pv.Mode(load=True))
    assert e.value.message == "tcflow needs root" and e.value.hint == "run it with sudo"
    with mock.patch.object(pv, "effective", return_value=0), mock.patch("os.geteuid", return_value=0), \
            pytest.raises(PermissionError_) as e:
        pv.require(pv.Mode(load=True))
    assert "CAP_BPF" in e.value.message and "CAP_NET_ADMIN" in e.value.message


def test_reading_pins_needs_cap_bpf_only_where_the_kernel_gates_every_bpf_call() -> None:
    for release, disabled, gated in (("6.1.0-28-amd64", "2", True), ("6.4.16", "1", True), ("6.5.0", "2", False),
                                     ("6.18.44-fc", "2", False), ("6.1.0", "0", False)):
        with mock.patch("os.uname") as uname, mock.patch("builtins.open", mock.mock_open(read_data=disabled)):
            uname.return_value.release = release
            assert pv.bpf_gated() is gated, release
            assert pv.grant(pv.needs(pv.Mode())) == (["CAP_BPF"] if gated else [])
