"""`tcflow serve`: /traffic and /metrics equal SPEC's counts; promtool; safe
defaults; counters never go down across a --pin restart; the dashboard in
headless Chromium; a bounded load test."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections import Counter
from typing import Any

from tcflow.host.sandbox import VethPair
from tests.support.cli import REPO, leftovers, nonzero
from tests.support.counting import FRAMES, RECV_B, RECV_P, SEND_B, SEND_P, both_ways, key
from tests.support.serve import Serve, parse_metrics
from tests.support.tools import require
from tests.traffic_gen.frames import send_frames

# Screenshots and other things a person may want to look at after a run;
# ignored by git, so `make test` leaves the tree as it was.
ARTIFACTS = os.path.join(REPO, "test-artifacts")


FAMILY_OF_LAYER = {"L4": "tcflow_payload_bytes_total", "L3": "tcflow_ip_bytes_total"}


def class_from_metrics(m: dict[tuple[str, frozenset], float], device: str, what: str = "bytes") -> Counter:
    """Back from Prometheus families and labels to tcflow class names, to
    compare with SPEC. Packets exist per IP packet (the L3 classes) and for
    what is kept apart; the L4 classes count the same packets again."""
    from tcflow.model.classes import CLASSES

    out: Counter = Counter()
    for c in CLASSES:
        if c.layer is None:
            family, labels = f"tcflow_excluded_{what}_total", {"reason": c.reason}
        elif what == "bytes":
            family, labels = FAMILY_OF_LAYER[c.layer], {"family": c.family, "protocol": c.protocol_label}
        elif c.layer == "L3":
            family, labels = "tcflow_packets_total", {"family": c.family, "protocol": c.protocol_label}
        else:
            continue
        labels.update(device=device, direction=c.direction)
        for (mname, lab), v in m.items():
            d = dict(lab)
            if mname == family and all(d.get(k) == val for k, val in labels.items()):
                out[c.name] += int(v)
    return +out


def packets_without_l4(p: Counter) -> Counter:
    from tcflow.model.classes import BY_NAME

    return +Counter({n: v for n, v in p.items() if BY_NAME[n].layer != "L4"})


def wait_for(pred: Any, timeout: float = 20) -> Any:
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        last = pred()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"not reached in {timeout} s: {last!r}")


def test_serve_traffic_and_metrics_equal_spec_counts(silent_pair: VethPair, pin_env: dict[str, str]) -> None:
    p = silent_pair
    before = open("/proc/sys/kernel/bpf_stats_enabled").read().strip()
    srv = Serve("--netns", p.ns_a, p.dev_a, env=pin_env)
    try:
        doc = srv.traffic()
        assert not any(doc["interfaces"][key(p)]["classes"].values())
        both_ways(p)
        want = RECV_B + SEND_B
        wait_for(lambda: nonzero({**srv.traffic()["interfaces"][key(p)]["classes"],
                                  **srv.traffic()["interfaces"][key(p)]["extended"]}) == want)
        ic = srv.traffic()["interfaces"][key(p)]
        assert nonzero({**ic["classes"], **ic["extended"]}) == want
        assert nonzero(ic["packets"]) == RECV_P + SEND_P
        from tcflow.model.classes import SEED_NAMES

        assert list(ic["classes"]) == list(SEED_NAMES)  # the 14 by name...
        assert [ic["by_index"][str(i)] for i in range(14)] == [ic["classes"][n] for n in SEED_NAMES]  # ...and index
        m = parse_metrics(srv.metrics())
        assert class_from_metrics(m, p.dev_a) == want
        assert class_from_metrics(m, p.dev_a, "packets") == packets_without_l4(RECV_P + SEND_P)
        # no family adds payload to IP bytes: each sums to one layer's total
        ip_total = sum(v for (n, lab), v in m.items() if n == "tcflow_ip_bytes_total")
        payload_total = sum(v for (n, lab), v in m.items() if n == "tcflow_payload_bytes_total")
        assert ip_total == sum(v for k, v in want.items() if k.startswith("L3_"))
        assert payload_total == sum(v for k, v in want.items() if k.startswith("L4_"))
        assert all(dict(lab).get("device") == p.dev_a and dict(lab).get("netns") == p.ns_a
                   for (n, lab), v in m.items() if n == "tcflow_ip_bytes_total")
        assert any(n == "tcflow_build_info" for (n, _), _v in m.items())
        assert any(n == "process_resident_memory_bytes" for (n, _), _v in m.items())
        # BPF statistics are on while serving (through BPF_ENABLE_STATS, which the sysctl does not show)
        runs = {dict(lab)["program"]: v for (n, lab), v in m.items() if n == "tcflow_program_runs_total"}
        assert runs.get("tc_ingress", 0) >= len(FRAMES) and runs.get("tc_egress", 0) >= len(FRAMES)
        assert any(n == "tcflow_program_run_seconds_total" and v > 0 for (n, _), v in m.items())
    finally:
        err = srv.stop()
    assert srv.p.returncode == 0, err
    assert open("/proc/sys/kernel/bpf_stats_enabled").read().strip() == before  # restored
    assert leftovers(p.ns_a, p.dev_a, pin_env["TCFLOW_PIN_DIR"]) == []


def test_promtool_finds_nothing(silent_pair: VethPair, pin_env: dict[str, str], tmp_path: Any) -> None:
    promtool = require("promtool")
    p = silent_pair
    srv = Serve("--netns", p.ns_a, p.dev_a, env=pin_env)
    try:
        both_ways(p)
        text = srv.metrics()
    finally:
        srv.stop()
    r = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "" and r.stderr.strip() == "", r.stdout + r.stderr


def test_read_only_and_safe_defaults(silent_pair: VethPair, pin_env: dict[str, str]) -> None:
    p = silent_pair
    srv = Serve("--netns", p.ns_a, p.dev_a, env=pin_env)
    try:
        assert srv.get("/nope")[0] == 404
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            code, headers, _ = srv.get("/traffic", method=method)
            assert code == 405 and headers.get("Allow") == "GET, HEAD"
        code, headers, body = srv.get("/metrics", method="HEAD")
        assert code == 200 and body == b"" and int(headers["Content-Length"]) > 0
        code, headers, body = srv.get("/")
        assert code == 200 and b"/dashboard.js" in body
        assert b"http" not in body.replace(b"http-equiv", b"")  # no external asset
        js = srv.get("/dashboard.js")[2]
        assert b"fetch(`/history?key=" in js and b"https://" not in js and b"http://" not in js
        assert srv.get("/history?since=soon")[0] == 400
        assert srv.get("/history?a=1&b=2&c=3&d=4&e=5")[0] == 400
        hist = json.loads(srv.get("/history?key=%s" % urllib.parse.quote(key(p)))[2])
        assert hist["known"] and hist["kept"] and [e["key"] for e in hist["interfaces"]] == [key(p)]
        assert json.loads(srv.get("/history?key=nothing-here")[2])["known"] is False
        from tcflow.model.classes import catalogue

        assert json.loads(srv.get("/classes")[2]) == catalogue()  # the dashboard's class list comes from here
        health = json.loads(srv.get("/healthz")[2])
        assert (health["status"], health["interfaces"], health["slots_used"], health["programs"]) == ("ok", 1, 1, 2)
        code, headers, _ = srv.get("/traffic", method="FOO")  # any method, not only the known ones
        assert code == 405 and headers.get("Allow") == "GET, HEAD"
        assert srv.get("/traffic", headers={"Host": "attacker.example"})[0] == 403  # DNS rebinding
        assert srv.get("/traffic", headers={"Host": f"localhost:{srv.port}"})[0] == 200
        assert "default-src 'none'" in srv.get("/")[1]["Content-Security-Policy"]
    finally:
        srv.stop()
    # the default is loopback only
    from tcflow.cli.parser import parser
    from tcflow.cli.serve import DEFAULT_LISTEN

    args = parser().parse_args(["serve", "eth0"])
    assert args.listen is None and DEFAULT_LISTEN == "127.0.0.1:8080"  # serve.run() takes the default then
    args = parser().parse_args(["serve", "eth0", "--listen", "127.0.0.1:1", "--web.listen-address", "[::1]:2"])
    assert args.listen == ["127.0.0.1:1", "[::1]:2"]  # --listen is --web.listen-address, repeatable


def test_counters_never_decrease_across_a_pin_restart(silent_pair: VethPair, pin_env: dict[str, str],
                                                      pin_dir: str) -> None:
    p = silent_pair
    srv = Serve("--pin", "--netns", p.ns_a, p.dev_a, env=pin_env)
    try:
        both_ways(p)
        first = wait_for(lambda: (lambda m: m if class_from_metrics(m, p.dev_a) == RECV_B + SEND_B else None)(
            parse_metrics(srv.metrics())))
    finally:
        srv.stop()
    send_frames(p.ns_a, p.dev_a, FRAMES)  # while no tcflow runs: still counted (pinned)
    srv = Serve("--pin", "--netns", p.ns_a, p.dev_a, env=pin_env)
    try:
        want = RECV_B + SEND_B + SEND_B
        second = wait_for(lambda: (lambda m: m if class_from_metrics(m, p.dev_a) == want else None)(
            parse_metrics(srv.metrics())))
    finally:
        srv.stop()
    for k, v in first.items():
        if k[0].startswith(("tcflow_ip_bytes", "tcflow_payload_bytes", "tcflow_packets", "tcflow_excluded")):
            assert second[k] >= v, k
    assert subprocess.run([sys.executable, "-m", "tcflow", "detach", "--all"], env=pin_env, cwd=REPO,
                          capture_output=True).returncode == 0
    assert leftovers(p.ns_a, p.dev_a, pin_dir) == []


def chrome() -> Any:
    """Headless Chromium through Debian's chromedriver (nothing downloaded), logging the console."""
    chromium, driver_path = require("chromium"), require("chromedriver")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900",
              "--no-first-run", "--disable-background-networking", "--disable-component-update"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver_path), options=opts)


def test_dashboard_in_headless_chromium(veth_pair: VethPair, pin_env: dict[str, str]) -> None:
    """The dashboard at 1280 px and at phone width (390 px): history from the
    server (a reload starts full), stacked protocols in the plot, nice axis
    labels, a legend with current values, a tooltip, the units toggle, the
    picker; screenshots whose pixels show the plot."""
    from selenium.webdriver.common.action_chains import ActionChains

    from tests.support import png
    from tests.traffic_gen.sockets import bulk_send, udp_exchange

    p = veth_pair
    srv = Serve("--netns", p.ns_a, p.dev_a, env=pin_env)
    stop = threading.Event()

    def traffic() -> None:  # TCP sent and UDP both ways over the veth while the page watches
        while not stop.is_set():
            bulk_send(p.ns_a, p.ns_b, p.ip4_b, 2_000_000, lambda s: time.sleep(0.1))
            udp_exchange(p.ns_a, p.ns_b, socket.AF_INET, p.ip4_a, p.ip4_b, 20, 1200, 40, 1200)
            udp_exchange(p.ns_a, p.ns_b, socket.AF_INET6, p.ip6_a, p.ip6_b, 10, 1200, 20, 1200)

    t = threading.Thread(target=traffic)
    t.start()
    drv = chrome()
    os.makedirs(ARTIFACTS, exist_ok=True)

    def drawn() -> dict[str, Any]:
        return drv.execute_script("return window.tcflow ? window.tcflow.drawn() : {}")  # type: ignore[no-any-return]

    def view(width: int, height: int, name: str) -> None:
        drv.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600})
        drv.get(srv.base + "/")
        wait_for(lambda: drv.execute_script("return window.tcflow && window.tcflow.updates()") >= 1)
        drv.find_element("css selector", '#range button[data-v="60"]').click()  # a young server: the last minute
        wait_for(lambda: drv.execute_script("return window.tcflow.updates()") >= 3)
        d = drawn()
        for side in ("recv", "send"):
            assert d[side]["max"] > 0 and d[side]["points"] >= 5, d[side]
            labels = d[side]["yLabels"]
            assert labels[0] == "0 bit/s" and len(set(labels)) == len(labels) >= 2, labels
            assert all(lab.endswith("bit/s") for lab in labels)
            xs = d[side]["xLabels"]  # wall-clock instants, evenly spaced
            assert len(xs) >= 3 and all(re.fullmatch(r"\d\d:\d\d(:\d\d)?", x) for x in xs), xs
        assert drv.execute_script("return document.documentElement.scrollWidth") <= width  # nothing off the side
        legend = drv.find_element("css selector", "#send .legend").text
        assert "TCP IPv4" in legend and "UDP IPv6" in legend and "other IPv4" in legend
        assert "bit/s" in drv.find_element("css selector", "#send .now").text
        for table in ("now", "since"):
            rows = drv.find_elements("css selector", f"#{table} tr")
            assert len(rows) == 1 + 6 + 1 and rows[-1].text.startswith("All")
            right = drv.execute_script(f"return document.getElementById('{table}').getBoundingClientRect().right")
            assert right <= width
        shot = os.path.join(ARTIFACTS, f"dashboard-{name}.png")
        drv.save_screenshot(shot)
        img = png.read(shot)
        assert img.width == width
        for side, colours in (("send", [(0x1F, 0x6F, 0xB4)]), ("recv", [(0xE8, 0x71, 0x0A), (0xF9, 0xBB, 0x7D)])):
            box = drv.execute_script(
                "const r = document.querySelector('#%s canvas').getBoundingClientRect();"
                "return [Math.round(r.left), Math.round(r.top), Math.round(r.width), Math.round(r.height)]" % side)
            if box[1] + box[3] > height:
                continue  # below the fold at phone width: the page scrolls there
            for rgb in colours:  # the stacked layers are in the picture, not only in the DOM
                assert img.count(tuple(box), rgb, tolerance=6) > 50, (name, side, rgb)

    try:
        wait_for(lambda: len(json.loads(srv.get("/history")[2])["times"]) >= 8, timeout=30)
        view(1280, 900, "1280")
        before = drawn()["send"]["points"]
        drv.refresh()  # the server keeps the history: a reload starts with at least as much
        wait_for(lambda: drv.execute_script("return window.tcflow && window.tcflow.updates()") >= 1)
        assert drawn()["send"]["points"] >= before

        options = [o.text for o in drv.find_elements("css selector", "#pick option")]
        assert options == ["All interfaces (1)", key(p)]
        drv.find_element("css selector", "#pick").send_keys(key(p))
        wait_for(lambda: drv.execute_script("return window.tcflow.key()") == key(p))
        wait_for(lambda: drawn()["send"]["points"] >= 5)

        canvas = drv.find_element("css selector", "#send canvas")
        # near the right edge (the newest points); offsets count from the element's centre
        ActionChains(drv).move_to_element_with_offset(canvas, canvas.size["width"] // 2 - 12, 0).perform()
        tip = drv.find_element("css selector", "#send .tip")
        wait_for(lambda: tip.is_displayed())
        assert "TCP IPv4" in tip.text and ":" in tip.text.split()[0]

        drv.find_element("css selector", '#units button[data-v="bytes"]').click()
        wait_for(lambda: drawn()["send"]["yLabels"][-1].endswith("B/s"))
        assert drv.find_element("css selector", "#send .now").text.endswith("B/s")
        drv.find_element("css selector", '#units button[data-v="bits"]').click()

        drv.find_element("css selector", '#family button[data-v="ipv6"]').click()
        wait_for(lambda: drawn()["recv"]["layers"] == ["TCP IPv6", "UDP IPv6", "other IPv6"])
        drv.find_element("css selector", '#family button[data-v="all"]').click()

        view(390, 844, "390")
        assert not drv.find_element("css selector", "#flows").is_displayed()  # no --flows: no flow table
        errors = [e for e in drv.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
    finally:
        stop.set()
        t.join(timeout=60)
        drv.quit()
        srv.stop()


def test_dashboard_lists_the_busiest_flows_with_serve_flows(veth_pair: VethPair, pin_env: dict[str, str]) -> None:
    from tests.traffic_gen.sockets import udp_exchange

    p = veth_pair
    srv = Serve("--flows", "--flow-idle", "4", "--netns", p.ns_a, p.dev_a, env=pin_env)
    drv = chrome()
    try:
        drv.get(srv.base + "/")
        wait_for(lambda: drv.execute_script("return window.tcflow && window.tcflow.updates()") >= 1)
        for _ in range(3):
            udp_exchange(p.ns_a, p.ns_b, socket.AF_INET, p.ip4_a, p.ip4_b, 50, 1000, 50, 1000)
        udp_exchange(p.ns_a, p.ns_b, socket.AF_INET6, p.ip6_a, p.ip6_b, 5, 1000, 5, 1000)  # long addresses

        def rows() -> list[str]:  # read in one go: the page rebuilds the table every second
            return drv.execute_script(  # type: ignore[no-any-return]
                "return Array.from(document.querySelectorAll('#flowtable tr'))"
                ".map(r => Array.from(r.cells).map(c => c.textContent).join(' '))")

        wait_for(lambda: any(r.startswith(key(p)) and " udp " in f" {r} " for r in rows()), timeout=20)
        head = rows()[0].split()
        assert head[:4] == ["Interface", "Protocol", "Local", "Remote"], head  # all interfaces: where each is
        udp = [r for r in rows() if " udp " in f" {r} " and f"{p.ip4_a}:" in r]
        assert len(udp) == 3 and all(f"{p.ip4_b}:" in r for r in udp), udp
        assert drv.find_element("css selector", "#flows").is_displayed()
        os.makedirs(ARTIFACTS, exist_ok=True)
        drv.execute_script("document.getElementById('flows').scrollIntoView()")
        drv.save_screenshot(os.path.join(ARTIFACTS, "dashboard-flows.png"))
        # at phone width every column is in view: nothing behind a sideways scroll
        drv.set_window_size(390, 844)
        wait_for(lambda: drv.execute_script("return window.innerWidth") <= 390)
        wait_for(lambda: any(f"[{p.ip6_a}]:" in r for r in rows()), timeout=20)
        fit = drv.execute_script("""const s = document.getElementById('flows');
            const cells = Array.from(document.querySelectorAll('#flowtable th'));
            return {scroll: s.scrollWidth - s.clientWidth, page: document.documentElement.scrollWidth - innerWidth,
                    right: Math.max(...cells.map(c => c.getBoundingClientRect().right)), width: innerWidth,
                    head: cells.map(c => c.textContent)};""")
        drv.execute_script("document.getElementById('flows').scrollIntoView()")
        drv.save_screenshot(os.path.join(ARTIFACTS, "dashboard-flows-390.png"))
        assert fit["head"] == ["Flow", "Received", "Sent", "Total"], fit  # which flow: one cell, a line each part
        assert fit["scroll"] <= 0 and fit["page"] <= 0 and fit["right"] <= fit["width"], fit
        # once every flow has gone idle and left the table, the page says so
        wait_for(lambda: rows()[1:] == ["no active flows"], timeout=30)
        assert [e for e in drv.get_log("browser") if e["level"] == "SEVERE"] == []
    finally:
        drv.quit()
        srv.stop()


def test_load_50_clients_200_scrapes_100_interfaces(make_netns: Any, pin_env: dict[str, str]) -> None:
    """Bounded load: no errors. The bench reports the p99 latency; this test asserts none.
    The clients ask for gzip, as Prometheus does."""
    ns = make_netns()
    names = [f"l{i}a" for i in range(100)]
    batch = "\n".join(f"link add {n} type veth peer name {n}p" for n in names) + "\n"
    subprocess.run(["ip", "-n", ns, "-batch", "-"], input=batch, text=True, check=True)
    srv = Serve("--netns", ns, *names, env=pin_env)
    errors: list[str] = []
    lat: list[float] = []

    def client(n: int) -> None:
        import gzip

        for i in range(200):
            t0 = time.perf_counter()
            try:
                # gzip, as Prometheus asks; every 20th body is unpacked and read in
                # full (unpacking all 10,000 would load this process, not tcflow)
                code, headers, body = srv.get("/metrics", gzip_ok=True, decompress=False)
                if code != 200 or headers.get("Content-Encoding") != "gzip" or body[:2] != b"\x1f\x8b":
                    errors.append(f"HTTP {code} {headers.get('Content-Encoding')}")
                elif (n * 200 + i) % 20 == 0 and gzip.decompress(body).count(b"tcflow_ip_bytes_total{") != 1200:
                    errors.append("a body without all 100 interfaces x 20 classes")
            except Exception as e:  # noqa: BLE001 - any failure is one to count
                errors.append(repr(e))
            lat.append(time.perf_counter() - t0)

    try:
        threads = [threading.Thread(target=client, args=(n,)) for n in range(50)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert len(json.loads(srv.get("/traffic")[2])["interfaces"]) == 100
    finally:
        srv.stop()
    assert errors == [] and len(lat) == 50 * 200


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def test_idle_slow_and_oversized_connections_do_not_starve_scrapes(silent_pair: VethPair,
                                                                   pin_env: dict[str, str]) -> None:
    """500 idle connections and 100 that send their headers a byte at a time,
    plus oversized heads and client resets: scrapes keep being answered, the
    thread count stays fixed, slow heads are cut off, nothing is logged."""
    p = silent_pair
    srv = Serve("--netns", p.ns_a, p.dev_a, env=pin_env)
    socks: list[socket.socket] = []
    try:
        threads_before = _threads(srv.p.pid)
        for _ in range(500):
            socks.append(socket.create_connection(("127.0.0.1", srv.port), timeout=10))
        slow = [socket.create_connection(("127.0.0.1", srv.port), timeout=10) for _ in range(100)]
        socks += slow
        for s in slow:
            s.sendall(b"GET /metrics HTTP/1.1\r\nX-Slow: ")
        for _ in range(3):  # keep the slow ones trickling while scrapes go on
            for s in slow:
                try:
                    s.sendall(b"a")
                except OSError:
                    pass
            code, _, body = srv.get("/metrics")
            assert code == 200 and b"tcflow_ip_bytes_total" in body
            time.sleep(1)
        assert _threads(srv.p.pid) <= threads_before + 1  # no thread per connection
        # a head larger than the limit gets 431 and the door
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as big:
            big.sendall(b"GET / HTTP/1.1\r\n" + b"X-Big: " + b"a" * 20000 + b"\r\n\r\n")
            assert big.recv(100).startswith(b"HTTP/1.1 431")
        # a client that resets mid-request is nobody's business
        for _ in range(20):
            with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as rst:
                rst.sendall(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
                rst.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        time.sleep(11)  # past the request deadline: the slow heads are closed by the server
        closed = 0
        for s in slow:
            try:
                s.settimeout(5)
                closed += s.recv(1) == b""
            except OSError:
                closed += 1
        assert closed == len(slow)
        assert srv.get("/healthz")[0] == 200
    finally:
        for s in socks:
            s.close()
        err = srv.stop()
    assert srv.p.returncode == 0
    assert "Traceback" not in err and "Error" not in err, err
