"""The table and the CLI's plain-data parts, without root: golden 80-column output."""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shlex
from typing import Any

import pytest

from tcflow.cli.main import main
from tcflow.cli.parser import fix_command, parser
from tcflow.model.classes import CLASSES, NAMES, SEED_NAMES
from tcflow.model.errors import AttachError
from tcflow.model.snapshot import Hooks, document, make_snapshot
from tcflow.output.table import header, human, render, render_all, screen
from tests.support.tools import require

GOLDEN = pathlib.Path(__file__).parent / "golden"


def _snaps():  # noqa: ANN202
    """Two snapshots 2 s apart, two interfaces, figures across every unit prefix."""
    base = [0] * len(NAMES)

    def row(scale: int) -> list[int]:
        return [(i + 1) * scale * 7919 for i in range(len(NAMES))]

    hooks_x = Hooks("xdp", "native")
    hooks_t = Hooks("tc", pinned=True)
    t0 = 1795300000.0
    a = make_snapshot([("eth1", "", 2, hooks_x, base, base),
                       ("veth0", "container-with-a-rather-long-namespace-name-here", 7, hooks_t, base, base)],
                      now=t0, mono=100.0)
    b = make_snapshot([("eth1", "", 2, hooks_x, row(1), row(1)),
                       ("veth0", "container-with-a-rather-long-namespace-name-here", 7, hooks_t, row(50000),
                        row(3))], now=t0 + 2, mono=102.0)
    return a, b


def _check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("TCFLOW_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"differs from {path}; TCFLOW_UPDATE_GOLDEN=1 rewrites it"


def test_table_matches_golden_and_fits_80_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    a, b = _snaps()
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    text = header(b, 1.0) + "\n\n" + render_all(b, a) + "\n"
    _check_golden("table_80.txt", text)
    assert all(len(line) <= 80 for line in text.splitlines())
    several = header(b, 1.0) + "\n\n" + render(b, a, "bits") + "\n"  # several interfaces: a line each
    _check_golden("summary_80.txt", several)
    assert all(len(line) <= 80 for line in several.splitlines())
    first = render_all(a) + "\n"  # the first snapshot: no rates yet
    _check_golden("table_first.txt", first)
    assert all(len(line) <= 80 for line in first.splitlines())
    monkeypatch.undo()
    time.tzset()


def test_table_groups_rows_as_a_person_reads_them() -> None:
    _, b = _snaps()
    labels = [ln.split("  ")[1] for ln in render_all(b).splitlines()[2:9]]
    assert "recv: xdp (native)" in render_all(b).splitlines()[0]
    assert labels == [c.title for c in CLASSES if c.seed and c.family == "ipv4"]
    assert labels[0] == "TCP payload sent" and labels[-1] == "IP bytes sent, other"


@pytest.mark.parametrize("n,text", [(0, "0 B"), (999, "999 B"), (1000, "1.0 kB"), (1234567, "1.2 MB"),
                                    (5e12, "5.0 TB"), (7e15, "7000.0 TB")])
def test_human_units(n: float, text: str) -> None:
    assert human(n) == text


def test_json_document_has_the_documented_shape() -> None:
    """One document for attach --json, show --json and /traffic."""
    _, b = _snaps()
    obj = json.loads(json.dumps(document(b)))
    assert set(obj) == {"time", "interfaces"}
    ic = obj["interfaces"]["eth1"]
    assert set(ic) == {"interface", "netns", "ifindex", "hook", "bytes", "packets", "classes", "by_index",
                       "extended", "container"}
    assert ic["container"] is None
    assert set(SEED_NAMES) <= set(ic["bytes"]) and set(ic["bytes"]) == set(NAMES)
    assert all(isinstance(v, int) for v in ic["bytes"].values())
    assert ic["hook"] == {"ingress": "xdp", "xdp_mode": "native", "egress": "tc", "pinned": False,
                          "counting": True}
    assert obj["interfaces"]["container-with-a-rather-long-namespace-name-here/veth0"]["hook"]["pinned"] is True
    assert ic["by_index"]["0"] == ic["classes"][SEED_NAMES[0]] == ic["bytes"][SEED_NAMES[0]]


def test_every_help_has_examples(capsys: pytest.CaptureFixture) -> None:
    for argv in ([], ["attach"], ["serve"], ["show"], ["status"], ["detach"], ["doctor"], ["demo"]):
        with pytest.raises(SystemExit) as e:
            parser().parse_args([*argv, "--help"])
        assert e.value.code == 0
        assert "examples:" in capsys.readouterr().out, argv


def test_usage_errors_exit_2_in_one_line_and_need_no_root(capsys: pytest.CaptureFixture) -> None:
    assert main(["detach"]) == 2
    assert main(["attach", "--follow", "eth9"]) == 2
    assert main(["attach", "ns1/"]) == 2
    assert main(["attach"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(ln.startswith("tcflow: error: ") for ln in err)
    assert "--all" in err[0] and "--match" in err[1] and "NETNS/IFACE" in err[2] and "no interface" in err[3]
    assert not any("(" in ln and "=" in ln for ln in err)  # plain words, no Python reprs


@pytest.mark.parametrize("argv", [["attach", "--interval", "0", "eth9"], ["attach", "--interval", "nan", "eth9"],
                                  ["attach", "--interval", "inf", "eth9"], ["attach", "--count", "-1", "eth9"],
                                  ["attach", "--max-interfaces", "0", "eth9"],
                                  ["attach", "--max-interfaces", "4294967297", "eth9"],
                                  ["attach", "--ingress", "bpf", "eth9"], ["attach", "--netns", "", "eth9"],
                                  ["attach", "--pin-dir", "", "eth9"], ["show", "--pin-dir", '/sys/fs/bpf/a"b'],
                                  ["detach", "--all", "--pin-dir", "/sys/fs/bpf"],
                                  ["status", "--pin-dir", "relative/dir"]])
def test_bad_values_are_usage_errors(argv: list[str], capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tcflow: error: ") and f"tcflow {argv[0]} --help" in err[0]


def test_hints_repeat_the_options_the_user_gave() -> None:
    args = parser().parse_args(["attach", "--pin", "--pin-dir", "/sys/fs/bpf/my-pins", "--netns", "ns1", "veth0"])
    assert fix_command(args, ("show",)) == "tcflow show --pin-dir /sys/fs/bpf/my-pins"
    assert fix_command(args, ("detach", "veth0")) == \
        "tcflow detach veth0 --pin-dir /sys/fs/bpf/my-pins --netns ns1"
    assert fix_command(args, ("detach", "ns1/veth0")) == "tcflow detach ns1/veth0 --pin-dir /sys/fs/bpf/my-pins"
    e = AttachError("ns1/veth0 already has tcflow attached", hint="`{fix}` removes it", fix=("detach", "ns1/veth0"))
    assert str(e) == "ns1/veth0 already has tcflow attached: `tcflow detach ns1/veth0` removes it"
    assert e.render(lambda w: fix_command(args, w)).endswith("`tcflow detach ns1/veth0 --pin-dir /sys/fs/bpf/my-pins`"
                                                            " removes it")


def test_targets_group_by_namespace() -> None:
    from tcflow.model.targets import Where, group

    ts = group(["veth0", "ns1/veth0", "ns2/veth0", "ns1/veth1", "pid:42/eth0"], ["ns1/tap*"], True, Where("ns9"))
    assert [(t.where, t.names, t.globs, t.follow) for t in ts] == [
        (Where("ns9"), ("veth0",), (), False), (Where("ns1"), ("veth0", "veth1"), ("tap*",), True),
        (Where("ns2"), ("veth0",), (), False), (Where(pid=42), ("eth0",), (), False)]
    assert group(["/proc/1/ns/net/eth0"], [], False, Where())[0].where == Where("/proc/1/ns/net")


def test_coalesced_calls_are_fresh_and_shared() -> None:
    """Callers that arrive during a call share the next one, never the current."""
    import threading
    import time

    from tcflow.output.http import Coalesced

    calls: list[float] = []
    gate = threading.Event()

    def fn() -> bytes:
        calls.append(time.monotonic())
        if len(calls) == 1:
            gate.wait(5)  # hold the first call until the others are waiting
        return str(len(calls)).encode()

    c = Coalesced(fn)
    got: dict[int, tuple[float, bytes]] = {}
    first = threading.Thread(target=lambda: got.__setitem__(0, (time.monotonic(), c())))
    first.start()
    while not calls:
        time.sleep(0.001)
    arrived = time.monotonic()
    others = [threading.Thread(target=lambda i=i: got.__setitem__(i, (arrived, c()))) for i in range(1, 6)]
    for t in others:
        t.start()
    time.sleep(0.1)
    gate.set()
    for t in [first, *others]:
        t.join()
    assert got[0][1] == b"1"
    assert {got[i][1] for i in range(1, 6)} == {b"2"}  # one shared call, begun after they arrived
    assert len(calls) == 2 and calls[1] >= arrived
    assert c() == b"3"  # a lone caller gets its own call


def test_max_interfaces_is_bounded_by_memory_on_many_cpus(monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture) -> None:
    """The counters map is per CPU: what 2 CPUs hold easily, 256 would not."""
    from tcflow.bpf import libbpf

    monkeypatch.setattr(libbpf, "num_possible_cpus", lambda: 256)
    assert main(["attach", "--max-interfaces", "65536", "eth9"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "MiB of counters" in err[0] and "256 CPUs" in err[0]


def _all_parsers() -> dict[str, argparse.ArgumentParser]:
    from tcflow.cli.completion import subcommands

    p = parser()
    return {"tcflow": p, **{f"tcflow {n}": sp for n, sp in subcommands(p).items()}}


def test_every_option_has_help_text() -> None:
    missing = [f"{name} {a.option_strings or a.dest}" for name, p in _all_parsers().items() for a in p._actions
               if not a.help and not isinstance(a, argparse._SubParsersAction)]
    assert missing == []


def test_bash_completion_knows_every_command_and_option(tmp_path: pathlib.Path) -> None:
    import subprocess

    from tcflow.cli.completion import bash

    script = tmp_path / "tcflow.bash"
    script.write_text(bash(parser()))
    assert subprocess.run([require("bash"), "-n", str(script)]).returncode == 0

    def complete(*words: str) -> list[str]:
        line = " ".join(f'"{w}"' for w in words)
        r = subprocess.run(["bash", "-c", f'source {script}; COMP_WORDS=(tcflow {line}); '
                            f'COMP_CWORD={len(words)}; _tcflow; printf "%s\\n" "${{COMPREPLY[@]}}"'],
                           capture_output=True, text=True, check=True)
        return r.stdout.split()

    for name, p in _all_parsers().items():
        if name == "tcflow":
            continue
        cmd = name.split()[1]
        assert cmd in complete(cmd[:3])
        opts = {o for a in p._actions for o in a.option_strings}
        assert opts <= set(complete(cmd, "-")), (cmd, opts - set(complete(cmd, "-")))
    assert complete("attach", "--ingress", "") == ["auto", "xdp", "tc"]
    assert complete("demo", "--ingress", "") == ["xdp", "tc"]


def test_the_live_screen_fits_80x24_with_50_interfaces_busiest_first() -> None:
    zero = [0] * len(NAMES)
    t0 = 1795300000.0

    def snap(mono: float, scale: int) -> object:
        return make_snapshot([(f"veth{i:02d}", "ns1", i + 2, Hooks("tc"),
                               [scale * (i + 1) * 1000] * len(NAMES), zero) for i in range(50)],
                             now=t0 + mono, mono=mono)

    a, b = snap(0.0, 0), snap(1.0, 1)
    notices = ["00:00:01 ns1/veth07 disappeared; its counters are no longer reported"]
    text = screen(b, a, 1.0, "bits", 80, 24, notices)
    lines = text.splitlines()
    assert len(lines) <= 24 and all(len(ln) <= 80 for ln in lines)
    assert lines[0].startswith("tcflow  ") and "50 interfaces" in lines[0]  # the header stays on screen
    assert lines[2].startswith("INTERFACE")
    assert lines[3].startswith("ns1/veth49") and lines[4].startswith("ns1/veth48")  # busiest first
    assert "bit/s" in lines[3] and any("more, quieter" in ln for ln in lines)
    assert lines[-1] == notices[0]  # notices stay visible at the bottom


@pytest.mark.parametrize("cli, library", [
    (["attach", "--max-interfaces", "65536", "eth9"], {"max_interfaces": 65536}),
])
def test_monitor_users_get_the_cli_s_errors(cli: list[str], library: dict[str, Any], capsys: pytest.CaptureFixture,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """One Settings, checked where it is built: the library refuses what the CLI refuses, in the same words."""
    import tcflow
    from tcflow.bpf import libbpf

    monkeypatch.setattr(libbpf, "num_possible_cpus", lambda: 256)
    assert main(cli) == 2
    err = capsys.readouterr().err.strip()
    with pytest.raises(tcflow.TcflowError) as e:
        tcflow.Monitor(["eth9"], **library)
    assert err == f"tcflow: error: {e.value.render(lambda words: 'tcflow ' + ' '.join(words))}"


@pytest.mark.parametrize("argv, want", [
    (["top"], "no interface given: name at least one, e.g. `tcflow top eth0` or `tcflow top ns1/veth0`, "
              "or give --match GLOB"),
    (["serve"], "e.g. `tcflow serve eth0` or `tcflow serve ns1/veth0`"),
    (["attach", "--interval", "0", "eth0"], "'0' is not a number of seconds above 0 and at most 86400 (e.g. 0.5)"),
])
def test_usage_errors_name_the_command_run_and_say_what_is_wanted(argv: list[str], want: str,
                                                                  capsys: pytest.CaptureFixture) -> None:
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own (a bad value): exit 2 as well
        code = int(e.code or 0)
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("tcflow: error: ") and want in err[0]


@pytest.mark.parametrize("command", ["attach", "show"])
def test_help_says_why_packets_exceed_ip_s_link(command: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "a GSO/GRO aggregate counts as the segments it stands for" in text and "`ip -s link`" in text


def test_the_pinned_mark_is_explained_where_it_shows() -> None:
    """HOOK's `*` (pinned) gets a legend line, within the screen's height."""
    zeros = [0] * len(NAMES)
    pinned = make_snapshot([(f"veth{i}", "", i + 2, Hooks("tc", pinned=i == 0), zeros, zeros) for i in range(30)])
    lines = screen(pinned, None, 1.0, "bytes", 80, 24, []).split("\n")
    assert len(lines) <= 24 and lines[-1].startswith("HOOK: recv on xdp or tc") and "* pinned" in lines[-1]
    assert any(ln.split()[-1] == "tc*" for ln in lines[3:-2]) and lines[-2].startswith("... and ")
    plain = make_snapshot([(f"veth{i}", "", i + 2, Hooks("tc"), zeros, zeros) for i in range(3)])
    assert "HOOK: recv on" not in render(plain)  # nothing to explain


def test_zsh_and_fish_completion_know_every_command_and_option(tmp_path: pathlib.Path) -> None:
    import subprocess

    from tcflow.cli.completion import fish, zsh

    (tmp_path / "_tcflow").write_text(zsh(parser()))
    assert subprocess.run([require("zsh"), "-n", str(tmp_path / "_tcflow")]).returncode == 0
    script = tmp_path / "tcflow.fish"
    script.write_text(fish(parser()))
    assert subprocess.run([require("fish"), "-n", str(script)]).returncode == 0

    def complete(line: str) -> list[str]:
        r = subprocess.run(["fish", "--no-config", "-c", f"source {script}; complete -C {shlex.quote(line)}"],
                           capture_output=True, text=True, check=True)
        return [ln.split("\t")[0] for ln in r.stdout.splitlines()]

    for name, p in _all_parsers().items():
        if name == "tcflow":
            continue
        cmd = name.split()[1]
        assert cmd in complete(f"tcflow {cmd[:3]}")
        longs = {o for a in p._actions for o in a.option_strings if o.startswith("--") and o != "--help"}
        assert longs <= set(complete(f"tcflow {cmd} --")), (cmd, longs - set(complete(f"tcflow {cmd} --")))
    assert sorted(complete("tcflow attach --ingress ")) == ["auto", "tc", "xdp"]
    assert sorted(complete("tcflow completion ")) == ["bash", "fish", "zsh"]


def test_ctrl_c_is_held_while_a_shielded_step_runs() -> None:
    """SIGINT during an attach or detach step is raised when the step ends,
    never in its middle (a netlink exchange cut there leaves things attached)."""
    from tcflow.system import interrupts

    assert interrupts.deliver()  # outside any step: at once
    done = []
    with pytest.raises(KeyboardInterrupt):
        with interrupts.shielded():
            with interrupts.shielded():
                assert not interrupts.deliver()  # held
                done.append("inner")
            done.append("outer")  # still inside: the step goes on
    assert done == ["inner", "outer"]
    with interrupts.shielded():
        pass  # nothing held any more: no second interrupt
    with pytest.raises(ValueError):
        with interrupts.shielded():
            interrupts.deliver()
            raise ValueError("the step failed")  # its own error goes on, the held Ctrl-C waits
    with pytest.raises(KeyboardInterrupt):
        with interrupts.shielded():
            pass
    interrupts.clear()
