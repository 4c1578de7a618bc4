"""`make bench`: run every benchmark, write bench/results/*.json and report.md.

    python -m bench.run            # the full run (about 10 minutes here)
    python -m bench.run --smoke    # tiny counts: checks that the bench works, not how fast

Every figure is a median of interleaved runs, or a ratio measured within
one pair of runs; the machine is shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from typing import Any, Callable

from bench import containers, discovery, flows, flowscale, insitu, perpacket, scale, scrape, startup, throughput
from tcflow.host.sandbox import remove_leftovers

HERE = os.path.dirname(os.path.abspath(__file__))
KPROBE_ANCHOR_NS = (100, 300)  # per-call cost published for kprobe-based counting (the design tcflow replaced)

FULL: dict[str, dict[str, Any]] = {"insitu": {"rounds": 3, "seconds": 2},
        "perpacket": {"repeat": 1_000_000, "rounds": 5},
        "throughput": {"pairs": 3, "seconds": 3.0},
        "scale": {"sizes": (1, 10, 100, 1000)},
        "startup": {"runs": 5},
        "scrape": {"clients": 50, "scrapes": 200, "interfaces": 100},
        "containers": {"count": 30},
        "flows": {"rounds": 3, "seconds": 2, "memory_flows": 10_000},
        "discovery": {"extra": (0, 3000, 10000), "forks": (0.0, 1.0), "seconds": 20.0, "containers": (0, 200)},
        "flowscale": {"rounds": 3, "seconds": 2.0}}
SMOKE: dict[str, dict[str, Any]] = {"insitu": {"rounds": 1, "seconds": 1, "hooks_": ("tc",),
                                               "traffic": (("ipv4", "udp"),)},
         "perpacket": {"repeat": 1000, "rounds": 1},
         "throughput": {"pairs": 1, "seconds": 1, "configs": ("tc_ingress",)},
         "scale": {"sizes": (1, 3)},
         "startup": {"runs": 1},
         "scrape": {"clients": 3, "scrapes": 5, "interfaces": 3, "idle": 5, "slow": 2},
         "containers": {"count": 2},
         "flows": {"rounds": 1, "seconds": 1, "traffic": (("ipv4", "udp"),), "memory_flows": 200},
         "discovery": {"extra": (20,), "forks": (0.0,), "seconds": 1.0, "settle_s": 2.0, "containers": (2,),
                       "scrapes": 3, "first_packets": 1},
         "flowscale": {"rounds": 1, "seconds": 0.3, "flows": (1, 100)}}


SECTIONS = ("insitu", "perpacket", "throughput", "scale", "startup", "scrape", "containers", "flows", "discovery",
            "flowscale")


def machine() -> dict[str, Any]:
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "?")
    except OSError:
        pass
    return {"date": time.strftime("%Y-%m-%d"), "kernel": platform.release(), "cpus": os.cpu_count(),
            "cpu_model": model, "python": platform.python_version()}


def _fmt_rate(unit: str, v: float) -> str:
    return f"{v / 1e9:.2f} Gbit/s" if unit == "bit/s" else f"{v / 1e3:.0f} kpkt/s"


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def targets(res: dict[str, Any]) -> list[str]:
    """The datapath's targets, each with the figure measured in this report."""
    ins, pp, sc, st = res["insitu"], res["perpacket"], res["scale"], res["startup"]
    tc = [r for r in ins["rows"] if r["hook"] == "tc"]
    ratio = ins["target"]["median_ratio"]
    worst = ins["target"]["worst_ratio"]
    xdp = pp["target"]["xdp_added_ns"]
    top = max(sc["results"], key=lambda r: r["interfaces"])
    rss = max(st["attach_rss_mib"], st["serve_rss_mib"])
    rows = [
        ("in-situ added ns, tcflow / minimal counter, TC ingress and egress", "<= 2.0x",
         f"median {ratio:.2f}x, worst {worst:.2f}x over {len(tc)} cells" if ratio is not None else "-",
         ratio is not None and ratio <= 2.0),
        ("XDP IPv4 TCP under test run, added over empty", "<= 10 ns", f"{xdp:.0f} ns", xdp <= 10),
        ("warm start to first snapshot", "<= 1.0 s", f"{st['warm_median_s']:.2f} s", st["warm_median_s"] <= 1.0),
        ("steady RSS of `attach` / `serve` (its HTTP front included)", "<= 40 MiB",
         f"{st['attach_rss_mib']:.1f} / {st['serve_rss_mib']:.1f} MiB",
         rss <= 40),
        ("cold start", "no slower than 3.2-4.7 s", f"{st['cold_median_s']:.2f} s", st["cold_median_s"] <= 4.7),
        ("load and verify both TC programs for one more namespace", "<= 0.1 s",
         f"{st['namespace_load_median_s']:.3f} s", st["namespace_load_median_s"] <= 0.1),
        (f"{top['interfaces']} interfaces attached / one full read", "<= 3 s / <= 10 ms",
         f"{top['attach_s']:.2f} s / {top['read_s'] * 1000:.1f} ms", top["attach_s"] <= 3 and top["read_s"] <= 0.010),
    ]
    fl = res.get("flows")
    if fl:
        t, mem = fl["target"], fl["memory"]
        med, worst = t["median_added_ns"], t["worst_added_ns"]
        rows.append(("in-situ added ns, `--flows` on over off, TC ingress and egress", "<= 30 ns",
                     f"median {med:.0f} ns, worst {worst:.0f} ns over {len(fl['rows'])} cells"
                     if med is not None else "-", bool(t["met"])))
        rows.append((f"memory for {mem['flows_sent']:,} flows (kernel: the cache, fixed, and the table's growth "
                     f"/ the agent's RSS)", "measured",
                     f"{mem['cache_bytes'] / 2**20:.1f} MiB + {(mem['map_bytes'] - mem['map_bytes_empty']) / 2**20:.1f}"
                     f" MiB ({mem['table_entries']:,} flows in the table) / {mem['agent_rss_kib_growth'] / 1024:.1f} "
                     f"MiB ({mem['cpus']} CPUs)", True))
    dc = res.get("discovery")
    if dc and dc["target"]["cpu_percent"]:
        got = "; ".join(f"{v:.2f} % with {k} process{'es' if k != '1' else ''} started a second"
                        for k, v in dc["target"]["cpu_percent"].items())
        rows.append((dc["target"]["what"], "<= 1 % of a core", got, bool(dc["target"]["met"])))
    node = dc.get("node") if dc else None
    if node:
        rows.append((f"`serve --containers --flows`, {node['containers']} containers: steady RSS (its HTTP front "
                     "included)", "<= 60 MiB",
                     f"{node['rss_mib']:.1f} MiB", node["rss_mib"] <= 60))
        p99 = node["scrape_ms"]["/metrics"]["p99"]
        rows.append((f"`/metrics` scrape with {node['containers']} containers: p99", "<= 100 ms", f"{p99:.1f} ms",
                     p99 <= 100))
    fs = res.get("flowscale")
    if fs:
        for r in fs["rows"]:
            if r["target_added_ns"] is not None:
                rows.append((f"`--flows` in situ at {r['flows']:,} concurrent flows (round robin), added over off",
                             f"<= +{r['target_added_ns']:.0f} ns", f"+{r['added_ns']:.0f} ns", bool(r["met"])))
    sk = res.get("soak")
    if sk:
        g = sk["growth_after_warm"]
        rows.append((f"soak ({sk['minutes']:g} min, `make soak`): RSS and fd growth after minute "
                     f"{sk['warm_minute']:g}; counter resets", "<= 1 MiB, 0 fds, 0 resets",
                     f"{g['rss_mib']:+.1f} MiB, {g['fds']:+d} fds, {sk['prometheus']['resets']:g} resets",
                     bool(sk["target"]["met"])))
    out = ["## Targets", "", "| figure | target | measured | |", "|---|---|---|---|"]
    out += [f"| {what} | {goal} | {got} | {_met(ok)} |" for what, goal, got, ok in rows]
    return out + [""]


def insitu_section(ins: dict[str, Any]) -> list[str]:
    out = ["## 1. Per-packet cost in situ (kernel BPF statistics under iperf3)", "",
           f"Each program on veth-b while iperf3 runs both ways through it (`--bidir`, {ins['seconds']} s a run, "
           f"median of {ins['rounds']} interleaved rounds); ns/packet is the kernel's run_time_ns / run_cnt. "
           "floor: an empty program; minimal: the bench's own 14-class counter (one per-CPU array, no "
           "per-interface lookup, no rare cases); tcflow: its programs as `tcflow attach` runs them. UDP carries "
           "64-byte payloads; TCP is one stream each way, so a packet there is a GSO aggregate.", "",
           "| traffic | hook | floor ns | minimal ns (added) | tcflow ns (added) | tcflow / minimal, added |",
           "|---|---|---|---|---|---|"]
    for r in ins["rows"]:
        ratio = f"{r['ratio']:.2f}x" if r["ratio"] is not None else "-"
        out.append(f"| {r['family']} {r['proto'].upper()} | {r['point'] if r['hook'] == 'tc' else r['hook']} | "
                   f"{r['floor_ns']:.0f} | {r['minimal_ns']:.0f} (+{r['minimal_added_ns']:.0f}) | "
                   f"{r['tcflow_ns']:.0f} (+{r['tcflow_added_ns']:.0f}) | {ratio} |")
    if ins.get("native_refused"):
        out += ["", f"Native XDP was refused on this veth: {ins['native_refused']}"]
    out += ["", "Programs as loaded (JITed bytes, instructions after the kernel's rewrite, instructions the "
            "verifier processed, time of the load):", "", "| program | hook | JITed bytes | insns | verified insns "
            "| load ms |", "|---|---|---|---|---|---|"]
    for variant, progs in ins["programs"].items():
        for point, f in progs.items():
            out.append(f"| {variant} | {point} | {f['jited_bytes']:,} | {f['xlated_insns']:,} | "
                       f"{f['verified_insns']:,} | {f['load_ms']:.1f} |")
    return out + [""]


def report(res: dict[str, Any]) -> str:
    m = res["machine"]
    out = [f"# tcflow benchmark report ({'smoke run, not figures' if res['smoke'] else 'make bench'})", "",
           f"{m['date']}, kernel {m['kernel']}, {m['cpus']} CPUs ({m['cpu_model']}), Python {m['python']}.",
           "Medians of interleaved runs on a shared VM: expect a few percent of noise.",
           "Sections run at: " + ", ".join(f"{n} {res[n].get('date', m['date'])}" for n in
                                           SECTIONS if n in res)
           + ".", ""]
    out += targets(res)
    out += insitu_section(res["insitu"])
    pp = res["perpacket"]
    out += ["## 2. Per-packet program cost (BPF_PROG_TEST_RUN)", "",
            f"repeat {pp['repeat']:,} per run, median of {pp['rounds']} rounds, each round an empty program "
            "of the same type (the floor) then tcflow's, on the same frame.", "",
            "| frame | bytes | program | ns/packet | floor ns | added ns | ratio |", "|---|---|---|---|---|---|---|"]
    for r in pp["results"]:
        ratio = f"{r['ratio']:.2f}" if r["ratio"] else "-"
        out.append(f"| {r['frame']} | {r['bytes']} | {r['program']} | {r['ns']:.0f} | {r['floor_ns']:.0f} | "
                   f"{r['added_ns']:.0f} | {ratio} |")
    t = pp["target"]
    out += ["", f"Target, {t['what']}: **{'met' if t['met'] else 'not met'}**: XDP adds {t['xdp_added_ns']:.0f} ns, "
            f"the costliest program {t['worst_program_added_ns']:.0f} ns.",
            f"For context: the floor is {min(r['floor_ns'] for r in pp['results']):.0f}-"
            f"{max(r['floor_ns'] for r in pp['results']):.0f} ns; kprobe-based counting is published at about "
            f"{KPROBE_ANCHOR_NS[0]}-{KPROBE_ANCHOR_NS[1]} ns per call (not measured here: this kernel has no "
            "kprobes).", ""]
    if pp.get("analysis"):
        out += [pp["analysis"], ""]
    tp = res["throughput"]
    out += ["## 3. Throughput over a veth between namespaces (iperf3)", "",
            f"{tp['where']}; {tp['pairs']} alternating pairs of {tp['seconds']:g} s runs per configuration; "
            "TCP is one stream, UDP carries 64-byte payloads (received packets/s).", "",
            "| traffic | configuration | no program (median) | with tcflow (median) | median ratio |",
            "|---|---|---|---|---|"]
    for r in tp["results"].values():
        out.append(f"| {r['proto'].upper()} | {r['config']} | {_fmt_rate(r['unit'], r['median_none'])} | "
                   f"{_fmt_rate(r['unit'], r['median_with'])} | {r['median_ratio']:.3f} |")
    t = tp["target"]
    ratio = f"{t['median_ratio']:.3f}" if t["median_ratio"] is not None else "-"
    out += ["", f"Target, {t['what']}: **{'met' if t['met'] else 'not met'}** (median ratio {ratio}).", ""]
    sc = res["scale"]
    out += ["## 4. Scale: one tcflow, many veths", "",
            "| interfaces | attach all | one full read | detach all | RSS | programs loaded |",
            "|---|---|---|---|---|---|"]
    for r in sc["results"]:
        out.append(f"| {r['interfaces']} | {r['attach_s']:.2f} s | {r['read_s'] * 1000:.2f} ms | "
                   f"{r['detach_s']:.2f} s | {r['rss_mib']:.0f} MiB | {r['programs_loaded']} |")
    t = sc["target"]
    out += ["", "Attach includes loading (verifying) the programs once for the namespace; making the Datapath "
            f"(maps, the cached program image: {sc['results'][0]['compile_s']:.2f} s) is not included and happens "
            "once per process. "
            "Programs loaded stays at 2 (clsact ingress and egress) whatever the number of interfaces: one "
            "compile, one load per namespace, shared by all its interfaces.", "",
            f"Target, {t['what']}: **{'met' if t['met'] else 'not met'}** ({t['attach_s']:.2f} s, "
            f"{t['read_ms']:.1f} ms).", ""]
    st = res["startup"]
    out += ["## 5. Start-up, memory, one more namespace", "",
            f"`tcflow attach --json` in a new process to its first snapshot, medians of {st['runs']} interleaved "
            f"runs: **warm {st['warm_median_s']:.2f} s** (compiled programs in the cache: no bcc, no LLVM), "
            f"**cold {st['cold_median_s']:.2f} s** (empty cache: bcc compiles in a child process, and the "
            "kernel-header fallback tree is made).", "",
            f"Steady RSS: `tcflow attach` **{st['attach_rss_mib']:.1f} MiB** (after 3 snapshots), `tcflow serve` "
            f"**{st['serve_rss_mib']:.1f} MiB** (after 5 scrapes; the agent and its HTTP front, a process of "
            f"its own without privilege); a cold start's compile child (bcc, LLVM) peaks at "
            f"**{st['compile_child_peak_rss_mib']:.0f} MiB** while it runs. Loading (verifying) both TC programs for "
            f"one more namespace: median **{st['namespace_load_median_s'] * 1000:.0f} ms**.", ""]
    sc2 = res["scrape"]
    out += ["## 6. /metrics under load (`tcflow serve`)", "",
            f"{sc2['clients']} concurrent clients x {sc2['scrapes_each']} scrapes, {sc2['interfaces']} interfaces "
            f"attached, gzip as Prometheus asks ({sc2['gzip_body_bytes']:,} bytes a scrape): "
            f"**p99 {sc2['p99_ms']:.0f} ms**, p50 {sc2['p50_ms']:.0f} ms, max {sc2['max_ms']:.0f} ms; "
            f"{sc2['scrapes_per_s']:.0f} scrapes/s; errors: {sc2['errors']}. Concurrent scrapes share one read "
            "and one rendering, each started after they arrived.", ""]
    h = sc2.get("held")
    if h:
        t = h["target"]
        out += [f"Then, with {h['idle']} idle connections and {h['slow']} that send their headers a byte at a "
                f"time held open, {h['probes']} single scrapes: max {h['max_ms']:.0f} ms, p50 {h['p50_ms']:.0f} ms, "
                f"errors {h['errors']}; the server's threads {h['threads_before']} -> peak {h['threads_peak']}, "
                f"RSS {h['rss_before_mib']:.0f} -> peak {h['rss_peak_mib']:.0f} MiB. The bounds by design: "
                "one event-loop thread and 4 rendering workers whatever the number of connections; at most "
                "1,024 connections, each holding at most a 16 KiB request head for at most 10 s.", "",
                f"Target, {t['what']}: **{'met' if t['met'] else 'not met'}** ({t['max_ms']:.0f} ms).", ""]
    ct = res.get("containers")
    if ct:
        out += ["## 7. Containers: one `tcflow serve --containers` (a real dockerd)", "",
                f"{ct['containers']} containers started one after another (busybox, Docker's internal network): "
                f"each listed in /traffic a median **{ct['attach_after_run_median_s'] * 1000:.0f} ms** (max "
                f"{ct['attach_after_run_max_s'] * 1000:.0f} ms) after `docker run` returned; serve's RSS "
                f"{ct['rss_empty_mib']:.1f} MiB with none, **{ct['rss_full_mib']:.1f} MiB** with all "
                f"{ct['containers']} ({ct['programs_full']} programs: two per container namespace; the spare set "
                f"verified ahead for the next container is not among them). After all were removed: "
                f"{ct['after_removal']}.", ""]
    fl = res.get("flows")
    if fl:
        mem = fl["memory"]
        out += ["## 8. Flows (`--flows`)", "",
                f"tcflow's TC programs on veth-b as `tcflow attach` runs them, the default image (flows off) and the "
                f"flows image (on) interleaved, iperf3 both ways ({fl['seconds']} s a run, median of "
                f"{fl['rounds']} rounds; the kernel's BPF statistics). iperf3 keeps one flow each way: this is the "
                "cost of a packet whose flow is in the table or in its per-CPU cache line.", "",
                "| traffic | hook | off ns | on ns | added ns |", "|---|---|---|---|---|"]
        for r in fl["rows"]:
            out.append(f"| {r['family']} {r['proto'].upper()} | {r['point']} | {r['off_ns']:.0f} | "
                       f"{r['on_ns']:.0f} | {r['added_ns']:+.0f} |")
        t = fl["target"]
        med = t["median_added_ns"]
        out += ["", f"Target, {t['what']}: **{'met' if t['met'] else 'not met'}** (median "
                f"{med:+.0f} ns, worst {t['worst_added_ns']:+.0f} ns)." if med is not None else "", "",
                f"Memory: {mem['flows_sent']:,} UDP flows made by real packets ({mem['flows_counted']:,} flows "
                f"counted, with the link's own ICMPv6; {mem['table_entries']:,} in the table, the rest still in "
                f"the per-CPU cache lines). The flow map (not preallocated) went from "
                f"{mem['map_bytes_empty']:,} to {mem['map_bytes']:,} bytes (the kernel's memlock account)"
                + (f": **{mem['kernel_bytes_per_flow']:.0f} bytes a flow** in it on {mem['cpus']} CPUs (each flow's "
                   f"counters are per CPU: 56 bytes more a flow for each CPU more)"
                   if mem["kernel_bytes_per_flow"] is not None else "") +
                f"; the cache in front of it is a fixed {mem['cache_bytes']:,} bytes (all CPUs). The agent's RSS grew "
                f"**{mem['agent_rss_kib_growth'] / 1024:.1f} MiB** for them; one read of the table (rates and "
                f"eviction) took {mem['tick_ms']:.0f} ms and one report {mem['report_ms']:.0f} ms with "
                f"{mem['flows_counted']:,} flows.", ""]
    dc = res.get("discovery")
    if dc:
        out += ["## 9. A node agent at node scale", "",
                f"One idle `tcflow serve --containers` per row: running busybox containers (a private dockerd), "
                f"extra `sleep` processes in the host's namespace; its CPU (user + system) over {dc['seconds']:g} s, "
                f"once it counts every container (*ready*: from its start to every container's namespace "
                f"watched, programs verified) and {dc['settle_s']:g} s more to settle, with no process started "
                "meanwhile, and with one `true` started a second (a busy node starts processes all the time).", "",
                "| containers | host processes | started a second | ready s | CPU, % of a core |",
                "|---|---|---|---|---|"]
        for r in dc["rows"]:
            ready = f"{r['ready_s']:.1f}" if "ready_s" in r else "-"
            out.append(f"| {r.get('containers', 0)} | {r['host_processes']:,} | {r['forks_per_s']:g} | {ready} | "
                       f"{r['cpu_percent']:.2f} |")
        out.append("")
        node = dc.get("node")
        if node:
            sm = node["scrape_ms"]
            out += [f"With {node['containers']} containers running, one `serve --containers --flows`: RSS (the "
                    f"agent and its HTTP front) "
                    f"{node['rss_mib']:.1f} MiB once settled ({node['rss_after_first_packets_mib']:.1f} MiB after "
                    f"the runs below); {node['scrapes']} scrapes each: `/metrics` ({node['bytes']['/metrics']:,} "
                    f"bytes) p50 {sm['/metrics']['p50']:.1f} ms, p99 {sm['/metrics']['p99']:.1f} ms; `/traffic` "
                    f"({node['bytes']['/traffic']:,} bytes) p50 {sm['/traffic']['p50']:.1f} ms, p99 "
                    f"{sm['/traffic']['p99']:.1f} ms. From `docker run` (the client started) to the container's "
                    f"first counted packet in `/traffic`, {len(node['first_packet_s'])} containers that ping as "
                    f"their first act: median {node['first_packet_median_s']:.2f} s, each "
                    + ", ".join(f"{v:.2f}" for v in node["first_packet_s"]) + " s.", ""]
    fs = res.get("flowscale")
    if fs:
        out += ["## 10. Flows at thousands of concurrent flows", "",
                f"tcflow on the sender's veth, clsact egress; 64-byte UDP datagrams to one port from N source "
                f"ports in turn (round robin: every packet another flow), {fs['seconds']:g} s a run, flows off and "
                f"on interleaved, median of {fs['rounds']} rounds; the kernel's BPF statistics. The "
                f"cache has {fs['cache_lines']:,} lines a CPU on this machine (4-way sets); *in table*: the "
                f"flows the cache had to hand over to the table in a run (the rest never left it). *Touch "
                f"floor*: a bench program that only adds 1 to one 64-byte line a flow (hashed from the ports into "
                f"{fs['cache_lines']:,} lines a CPU, each CPU its own part of one array, as the cache) "
                f"against an empty program, same runs: "
                f"what reaching per-flow memory costs at all, with no key and no table.", "",
                "| flows | off ns | on ns | added ns | in table | touch floor, added ns | target |",
                "|---|---|---|---|---|---|---|"]
        for r in fs["rows"]:
            goal = f"<= +{r['target_added_ns']:.0f} ({_met(bool(r['met']))})" if r["target_added_ns"] else "-"
            out.append(f"| {r['flows']:,} | {r['off_ns']:.1f} | {r['on_ns']:.1f} | {r['added_ns']:+.1f} | "
                       f"{r['in_table']:,.0f} | {r['touch_added_ns']:+.1f} | {goal} |")
        out.append("")
    sk = res.get("soak")
    if sk:
        first, last = sk["samples"][0], sk["samples"][-1]
        warm = next(x for x in sk["samples"] if x["minute"] == sk["warm_minute"])
        out += ["## 11. Soak (`make soak`, run on its own)", "",
                f"{sk['date']}" + (f" (commit {sk['commit']})" if sk.get("commit") else "") +
                f": `tcflow serve --containers --flows --pin` for {sk['minutes']:g} minutes with a "
                f"private dockerd: a pinger container at 100 echo requests a second to a peer container the "
                f"whole time, and every {sk['churn_s']:g} s a new container that pings the peer 5 times and goes "
                f"({sk['container_lives']:,} container lives, {sk['docker_run_failures']} `docker run` failures); "
                f"Prometheus scraping every 5 s. Sampled every minute; growth is measured from minute "
                f"{sk['warm_minute']:g} (past the dashboard's 15-minute window) to the end.", "",
                "| | first sample | minute %g | last sample | growth after it |" % sk["warm_minute"],
                "|---|---|---|---|---|"]
        for k, label in (("rss_mib", "RSS MiB"), ("fds", "open fds"), ("threads", "threads"),
                         ("slots_used", "interface slots used"), ("programs", "programs loaded"),
                         ("history_rings", "dashboard history rings (43 kB each)")):
            if k in last:
                fmt = "{:.1f}" if k == "rss_mib" else "{}"
                out.append(f"| {label} | {fmt.format(first[k])} | {fmt.format(warm[k])} | {fmt.format(last[k])} "
                           f"| {sk['growth_after_warm'].get(k, last[k] - warm[k]):+g} |")
        for name in sorted(last.get("maps", {})):
            out.append(f"| pinned map `{name}` entries | {first['maps'].get(name, 0)} | {warm['maps'].get(name, 0)} "
                       f"| {last['maps'][name]} | {last['maps'][name] - warm['maps'].get(name, 0):+d} |")
        pr = sk["prometheus"]
        if sk.get("cpu_percent"):
            out += ["", f"tcflow's CPU (user + system) over each minute, under this churn: median "
                    f"{sk['cpu_percent']['median']:.1f} %, at most {sk['cpu_percent']['max']:.1f} % of a core."]
        out += ["", f"Prometheus over the run: `resets()` summed over every series of tcflow_ip_bytes_total and "
                f"tcflow_packets_total: **{pr['resets']:g}**; {pr['series_at_end']:g} tcflow_ip_bytes_total "
                f"series at the end; {pr['scrapes_up']:g} successful scrapes.", ""]
    cg = res.get("cgroupcost")
    if cg:
        out += ["## 12. Cgroup attribution, a design probe (`python -m bench.cgroupcost`, run on its own)", "",
                f"{cg['date']}" + (f" (commit {cg['commit']})" if cg.get("commit") else "") +
                ": what issue 25's `--cgroups` would add a packet, before it is built (bench/cgroupcost.py). "
                "The section 1 harness (a veth, iperf3 both ways, BPF statistics), the bench's minimal "
                "counter against the same counter plus the attribution, interleaved, median of "
                f"{cg['rounds']} rounds. Egress: `bpf_skb_cgroup_id`. Clsact ingress: the packet's own tuple "
                "looked up (`bpf_skc_lookup_tcp`/`bpf_sk_lookup_udp`, then `bpf_sk_release`); the verifier "
                "refuses `bpf_sk_cgroup_id` to clsact programs, so finding the socket is all clsact ingress "
                "can do. *helper*: the helpers, their answer in a two-entry array; *with hash*: bytes and "
                "packets in a per-CPU hash keyed by the cgroup id; *by socket storage* (egress): the socket "
                "remembers its cgroup's slot in socket-local storage (`bpf_sk_storage_get`, filled on its "
                "first packet), then one per-CPU array update; *by cache*: a per-CPU direct-mapped cache of "
                "256 tagged lines (a cgroup id to a line) in front of the hash, a hit one array update. "
                "*found*: the share of packets whose cgroup (egress) or socket (ingress) was found.", "",
                "| traffic | hook | minimal ns | helper, added ns | with hash, added ns | by socket storage, "
                "added ns | by cache, added ns | found | target |",
                "|---|---|---|---|---|---|---|---|---|"]
        for r in cg["rows"]:
            if r["point"] == "cgroup_skb_ingress":
                continue
            limit = 25 if r["point"] == "tc_egress" else 60
            stored, cached = r.get("storage_added_ns"), r.get("cache_added_ns")
            best = min(v for v in (r["added_ns"], stored, cached) if v is not None)
            out.append(f"| {r['family']} {r['proto']} | {r['point']} | {r['minimal_ns']:.1f} | "
                       f"{r['helper_added_ns']:+.1f} | {r['added_ns']:+.1f} | "
                       f"{'-' if stored is None else f'{stored:+.1f}'} | "
                       f"{'-' if cached is None else f'{cached:+.1f}'} | {r['attributed']:.3f} | "
                       f"<= +{limit} ({_met(best <= limit)}) |")
        rows = [r for r in cg["rows"] if r["point"] == "cgroup_skb_ingress"]
        if rows:
            out += ["", "The other way to a received packet's socket: a cgroup_skb ingress program at the root "
                    "of the cgroup v2 tree, which the kernel runs once the socket is known (measured alone, "
                    "nothing on clsact): an empty one; one that classifies from the IP header into the "
                    "cgroup's 14 classes in a per-CPU hash keyed by `bpf_skb_cgroup_id`; one by socket "
                    "storage and one by cache, as above, which add a byte and packet count without "
                    "classifying (the classification is what the minimal counter adds over an empty program "
                    "in section 1).", "",
                    "| traffic | empty ns | with hash ns | added ns | by socket storage ns | added ns | "
                    "by cache ns | added ns |",
                    "|---|---|---|---|---|---|---|---|"]
            for r in rows:
                out.append(f"| {r['family']} {r['proto']} | {r['empty_ns']:.1f} | {r['count_ns']:.1f} | "
                           f"{r['added_ns']:+.1f} | {r['storage_ns']:.1f} | {r['storage_added_ns']:+.1f} | "
                           f"{r['cache_ns']:.1f} | {r['cache_added_ns']:+.1f} |")
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny counts, for the tests")
    ap.add_argument("--out", default=os.path.join(HERE, "results"), help="where the JSON and report go")
    ap.add_argument("--only", action="append", metavar="NAME",
                    help="run just this section (repeatable); the report takes the others from their saved JSON")
    ap.add_argument("--report", action="store_true", help="run nothing: write the report from the saved JSON")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench: run as root (it loads BPF and makes namespaces)", file=sys.stderr)
        return 1
    params = SMOKE if args.smoke else FULL
    os.makedirs(args.out, exist_ok=True)
    res: dict[str, Any] = {"smoke": args.smoke, "machine": machine()}
    for alone in ("soak", "cgroupcost"):  # run on their own; the report shows their last run
        path = os.path.join(args.out, f"{alone}.json")
        if not args.smoke and os.path.exists(path):
            with open(path) as f:
                res[alone] = json.load(f)
    steps: list[tuple[str, Callable[..., dict[str, Any]]]] = [
        ("insitu", insitu.run), ("perpacket", perpacket.run), ("throughput", throughput.run), ("scale", scale.run),
        ("startup", startup.run), ("scrape", scrape.run), ("containers", containers.run), ("flows", flows.run),
        ("discovery", discovery.run), ("flowscale", flowscale.run)]
    if args.report:
        args.only = []
    if args.only is not None:
        unknown = set(args.only) - {n for n, _ in steps}
        if unknown:
            print(f"bench: no section {', '.join(sorted(unknown))}", file=sys.stderr)
            return 2
        for name, _ in steps:
            if name not in args.only:
                with open(os.path.join(args.out, f"{name}.json")) as f:
                    res[name] = json.load(f)
        steps = [(n, fn) for n, fn in steps if n in args.only]
    try:
        for name, fn in steps:
            t0 = time.monotonic()
            print(f"bench: {name} ...", file=sys.stderr, flush=True)
            res[name] = fn(**params[name])
            res[name]["elapsed_s"] = time.monotonic() - t0
            res[name]["date"] = time.strftime("%Y-%m-%d %H:%M") + (" (--only)" if args.only else "")
            with open(os.path.join(args.out, f"{name}.json"), "w") as f:
                json.dump({"machine": res["machine"], "smoke": args.smoke, **res[name]}, f, indent=1)
    finally:
        remove_leftovers("tcfb-")
    text = report(res)
    with open(os.path.join(args.out, "report.md"), "w") as f:
        f.write(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
