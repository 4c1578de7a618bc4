"""The table and the CLI's plain-data parts, without root: golden 80-column output."""

from __future__ import annotations

import json
import os
import pathlib

import pytest

from tcflow.classes import NAMES, SEED_NAMES
from tcflow.cli import parser, snapshot_json
from tcflow.counters import make_snapshot
from tcflow.exporters.table import header, human, render

GOLDEN = pathlib.Path(__file__).parent / "golden"


def _snaps():  # noqa: ANN202
    """Two snapshots 2 s apart, two interfaces, figures across every unit prefix."""
    base = [0] * len(NAMES)

    def row(scale: int) -> list[int]:
        return [(i + 1) * scale * 7919 for i in range(len(NAMES))]

    hooks_x = {"ingress": "xdp", "xdp_mode": "native", "egress": "tc", "pinned": False}
    hooks_t = {"ingress": "tc", "xdp_mode": None, "egress": "tc", "pinned": True}
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
    text = header(b, 1.0) + "\n\n" + render(b, a) + "\n"
    _check_golden("table_80.txt", text)
    assert all(len(line) <= 80 for line in text.splitlines())
    first = render(a) + "\n"  # the first snapshot: no rates yet
    _check_golden("table_first.txt", first)
    assert all(len(line) <= 80 for line in first.splitlines())
    monkeypatch.undo()
    time.tzset()


def test_table_groups_rows_as_a_person_reads_them() -> None:
    _, b = _snaps()
    labels = [ln.split("  ")[1] for ln in render(b).splitlines()[2:9]]
    assert "recv: xdp (native)" in render(b).splitlines()[0]
    assert labels == ["TCP payload sent", "TCP payload recv", "UDP payload sent", "UDP payload recv",
                      "IP bytes sent, TCP", "IP bytes sent, UDP", "IP bytes sent, other"]


@pytest.mark.parametrize("n,text", [(0, "0 B"), (999, "999 B"), (1000, "1.0 KB"), (1234567, "1.2 MB"),
                                    (5e12, "5.0 TB"), (7e15, "7000.0 TB")])
def test_human_units(n: float, text: str) -> None:
    assert human(n) == text


def test_json_line_has_the_documented_shape() -> None:
    _, b = _snaps()
    obj = json.loads(snapshot_json(b))
    assert set(obj) == {"time", "interfaces"}
    ic = obj["interfaces"]["eth1"]
    assert set(ic) == {"bytes", "packets", "hook"}
    assert set(SEED_NAMES) <= set(ic["bytes"]) and set(ic["bytes"]) == set(NAMES)
    assert all(isinstance(v, int) for v in ic["bytes"].values())
    assert ic["hook"]["ingress"] == "xdp"


def test_every_help_has_examples(capsys: pytest.CaptureFixture) -> None:
    for argv in ([], ["attach"], ["show"], ["status"], ["detach"], ["doctor"], ["demo"]):
        with pytest.raises(SystemExit) as e:
            parser().parse_args([*argv, "--help"])
        assert e.value.code == 0
        assert "examples:" in capsys.readouterr().out, argv


def test_usage_errors_are_one_line_and_need_no_root(capsys: pytest.CaptureFixture) -> None:
    from tcflow.cli import main

    assert main(["detach"]) == 1
    assert main(["attach", "--follow", "eth9"]) == 1
    assert main(["attach", "--interval", "0", "eth9"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(ln.startswith("tcflow: error: ") for ln in err)
    assert "--all" in err[0] and "--match" in err[1] and "--interval" in err[2]


def test_coalesced_calls_are_fresh_and_shared() -> None:
    """Callers that arrive during a call share the next one, never the current."""
    import threading
    import time

    from tcflow.exporters.http import Coalesced

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
