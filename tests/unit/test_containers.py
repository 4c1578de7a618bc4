"""Container discovery from a made-up /proc and runtime state: no runtime needed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tcflow import containers
from tcflow.containers import oci

A, B, C, D = ("a" * 64, "b" * 64, "c" * 64, "d" * 64)


def _proc(root: Path, pid: int, cgroup: str, netns: str, cmdline: bytes = b"sleep\0", uid: int = 0) -> None:
    d = root / "proc" / str(pid)
    (d / "ns").mkdir(parents=True)
    (d / "cgroup").write_text(cgroup)
    (d / "cmdline").write_bytes(cmdline)
    (d / "status").write_text(f"Name:\tx\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n")
    target = root / "netns" / netns
    target.parent.mkdir(exist_ok=True)
    if not target.exists():
        target.write_text("")
    os.link(target, d / "ns" / "net")  # one namespace, one inode


def _docker(root: Path, cid: str, name: str, pid: int, running: bool = True, labels: dict | None = None) -> None:
    d = root / "docker" / "containers" / cid
    d.mkdir(parents=True)
    (d / "config.v2.json").write_text(json.dumps({"Name": "/" + name, "State": {"Running": running, "Pid": pid},
                                                  "Config": {"Labels": labels or {}}}))


@pytest.fixture
def host(tmp_path: Path) -> Path:
    os.chmod(tmp_path, 0o700)
    _proc(tmp_path, 1, "0::/init.scope\n", "host")
    _proc(tmp_path, 50, "0::/system.slice/docker.service\n", "host",
          cmdline=b"/usr/bin/dockerd\0--data-root\0" + str(tmp_path / "docker").encode() + b"\0")
    (tmp_path / "docker").mkdir(mode=0o700)
    return tmp_path


def test_docker_containers_named_from_their_record_and_grouped_by_namespace(host: Path) -> None:
    _proc(host, 100, f"0::/docker/{A}\n", "ns-web")
    _proc(host, 101, f"0::/docker/{A}\n", "ns-web")          # a second process of web
    _proc(host, 200, f"0::/system.slice/docker-{B}.scope\n", "ns-db")
    _proc(host, 300, f"0::/docker/{C}\n", "host")            # --network host
    _docker(host, A, "web", 100)
    _docker(host, B, "db", 200)
    _docker(host, C, "agent", 300)
    groups = containers.scan(str(host / "proc"))
    by_label = {g.label: g for g in groups}
    assert set(by_label) == {"web", "db", "agent"}
    assert by_label["web"].pid == 100 and not by_label["web"].host_network
    assert by_label["agent"].host_network
    assert by_label["db"].labels() == {"container_id": B, "container": "db", "runtime": "docker", "pod": "",
                                       "namespace": ""}


def test_a_process_that_only_claims_a_containers_cgroup_gets_nothing(host: Path) -> None:
    """Docker's own record says which process is the container; a stopped one is no entry."""
    _proc(host, 100, f"0::/docker/{A}\n", "ns-web")
    _proc(host, 666, f"0::/docker/{A}\n", "ns-evil")  # not the recorded pid: ignored (100 comes first)
    _docker(host, A, "web", 100)
    _proc(host, 400, f"0::/docker/{D}\n", "ns-old")
    _docker(host, D, "old", 400, running=False)
    _proc(host, 700, f"0::/user.slice/user-1000.slice/user@1000.service/docker-{B}.scope\n", "ns-user")
    _docker(host, B, "db", 700)
    groups = containers.scan(str(host / "proc"))
    assert [g.label for g in groups] == ["web"]
    assert groups[0].inode == os.stat(host / "netns" / "ns-web").st_ino


def test_a_dockerd_not_run_by_root_names_no_data_root(host: Path, tmp_path: Path) -> None:
    evil = tmp_path / "evil"
    evil.mkdir(mode=0o700)
    _proc(host, 60, "0::/x\n", "host", cmdline=b"dockerd\0--data-root=" + str(evil).encode() + b"\0", uid=1000)
    roots = containers.docker_roots(str(host / "proc"))
    assert str(evil) not in roots and str(host / "docker") in roots


def test_a_pod_is_one_entry_that_names_every_container(host: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = host / "containerd"
    for cid, name, kind in ((A, "", "sandbox"), (B, "app", "container"), (C, "sidecar", "container")):
        d = state / "k8s.io" / cid
        d.mkdir(parents=True)
        (d / "config.json").write_text(json.dumps({"annotations": {
            "io.kubernetes.cri.container-type": kind, "io.kubernetes.cri.container-name": name,
            "io.kubernetes.cri.sandbox-name": "shop-7f9", "io.kubernetes.cri.sandbox-namespace": "prod"}}))
        pid = {A: 500, B: 501, C: 502}[cid]
        _proc(host, pid, f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-pod1.slice/"
              f"cri-containerd-{cid}.scope\n", "ns-pod")
    os.chmod(state, 0o700)
    monkeypatch.setattr(oci, "CONTAINERD_STATE", str(state))
    groups = containers.scan(str(host / "proc"))
    assert len(groups) == 1
    g = groups[0]
    assert g.label == "prod/shop-7f9"
    labels = g.labels()
    assert labels["container"] == ",".join(
        n for _, n in sorted([(A, "POD"), (B, "app"), (C, "sidecar")]))
    assert labels["pod"] == "shop-7f9" and labels["namespace"] == "prod" and labels["runtime"] == "containerd"


@pytest.mark.parametrize("path,want", [
    (f"0::/system.slice/docker-{A}.scope", ("docker", A)),
    (f"12:pids:/docker/{A}", ("docker", A)),
    (f"0::/kubepods/besteffort/pod1/{A}", ("containerd", A)),
    (f"0::/machine.slice/libpod-{A}.scope/container", ("podman", A)),
    (f"0::/kubepods.slice/crio-{A}.scope", ("cri-o", A)),
    ("0::/lxc.payload.web1/init.scope", ("lxc", "web1")),
    ("0::/machine.slice/machine-deb12.scope/payload", ("systemd-nspawn", "deb12")),
    ("0::/system.slice/ssh.service", None),
    (f"0::/docker/{A[:63]}", None),
    (f"0::/user.slice/user-1000.slice/docker-{A}.scope", None),
])
def test_cgroup_paths_of_each_runtime(path: str, want: tuple[str, str] | None) -> None:
    assert containers.parse_cgroup(path + "\n") == want


def test_hostile_names_and_files_are_bounded_and_escaped(host: Path) -> None:
    _proc(host, 100, f"0::/docker/{A}\n", "ns-web")
    _docker(host, A, "we\x1b[31mb\nx", 100)
    (host / "docker" / "containers" / B).mkdir(parents=True)
    (host / "docker" / "containers" / B / "config.v2.json").write_bytes(b"{" * (2 << 20))  # over the bound
    _proc(host, 200, f"0::/docker/{B}\n", "ns-b")
    os.symlink("/etc/shadow", host / "docker" / "containers" / B / "hostname")
    groups = containers.scan(str(host / "proc"))
    assert [g.labels()["container"] for g in groups] == ["we\\x1b[31mb\\x0ax"]


def test_a_starting_container_is_trusted_through_roots_shim_for_its_id(host: Path) -> None:
    """Before Docker's record says running (the runtime is still wiring the
    network), the process counts only if root's containerd shim for that id is
    its ancestor; a shim for another id, or one a user runs, gives nothing."""
    _docker(host, A, "early", 0, running=False)
    _proc(host, 80, "0::/system.slice/containerd.service\n", "host",
          cmdline=b"/usr/bin/containerd-shim-runc-v2\0-namespace\0moby\0-id\0" + A.encode() + b"\0")
    _proc(host, 81, "0::/x\n", "host", cmdline=b"containerd-shim-runc-v2\0-id\0" + A.encode() + b"\0", uid=1000)
    for pid, parent in ((100, 80), (200, 81), (300, 1)):
        _proc(host, pid, f"0::/docker/{A}\n", f"ns-{pid}")
        (host / "proc" / str(pid) / "stat").write_text(f"{pid} (runc:[2:INIT]) S {parent} 0 0\n")
    (groups,) = [containers.scan(str(host / "proc"))]
    assert [(g.label, g.pid) for g in groups] == [("early", 100)]
    # runc's helpers, still in the shim's namespace, are not the container
    os.unlink(host / "proc" / "100" / "ns" / "net")
    os.link(host / "netns" / "host", host / "proc" / "100" / "ns" / "net")
    assert containers.scan(str(host / "proc")) == []
    os.unlink(host / "proc" / "100" / "ns" / "net")
    os.link(host / "netns" / "ns-100", host / "proc" / "100" / "ns" / "net")
    os.unlink(host / "proc" / "100" / "cgroup")  # the shim's child gone: the others stay untrusted
    assert containers.scan(str(host / "proc")) == []


def test_a_host_network_container_is_known_by_tcflows_own_namespace_when_inits_is_unreadable(host: Path) -> None:
    """Found on a VM whose pid 1 hides its namespace: a --network host container
    must still be seen as the host's, never counted (its interfaces are the host's)."""
    os.unlink(host / "proc" / "1" / "ns" / "net")
    _proc(host, 300, f"0::/docker/{C}\n", "host")
    _docker(host, C, "agent", 300)
    (g,) = containers.scan(str(host / "proc"), own=str(host / "netns" / "host"))
    assert g.host_network and g.label == "agent"


def test_a_rename_says_whether_the_link_is_up() -> None:
    """The agent takes a container interface's new name only when it is up (the
    runtime naming it eth0), never when it is down (the runtime taking it away)."""
    from tcflow.host.interfaces import Interface, diff
    from tcflow.system.netns import Netns

    ns = Netns("c", "/proc/1/ns/net", 1, 1)
    held = [Interface("veth72e9668", 5, ns, "veth")]
    assert diff(held, [(5, "eth0", "veth", True, 4)], ns, ["*"], True).renamed == [(held[0], "eth0", True)]
    assert diff(held, [(5, "eth0", "veth", False, 4)], ns, ["*"], True).renamed == [(held[0], "eth0", False)]


@pytest.mark.parametrize("name, want", [
    ("", "did you mean veth0? list them with `ip link`"),
    ("ns1", "did you mean veth0? list them with `ip -n ns1 link`"),
    ("pid:4242", "did you mean veth0? list them with `nsenter -t 4242 -n ip link`"),
])
def test_an_unknown_interface_says_what_exists_and_how_to_list_them(name: str, want: str) -> None:
    from tcflow.host.interfaces import lookup
    from tcflow.model.errors import InterfaceError
    from tcflow.system.netns import Netns

    present = [(1, "lo", "", True, None), (2, "veth0", "veth", True, 3), (4, "eth1", "", True, None)]
    with pytest.raises(InterfaceError) as e:
        lookup(present, Netns(name, "/run/netns/x", 1, 2), "vteh0")
    assert e.value.render().endswith(f": {want}")
    with pytest.raises(InterfaceError) as e:
        lookup(present, Netns(name, "/run/netns/x", 1, 2), "wlan7")  # nothing close: no guess
    assert "did you mean" not in e.value.render()


def _stat(root: Path, pid: int, started_ticks: int) -> None:
    """/proc/PID/stat with a start time (field 22) and a name that holds ') ' to mislead a parser."""
    (root / "proc" / str(pid) / "stat").write_text(f"{pid} (a) b) S 1 " + "0 " * 17 + f"{started_ticks} 0 0\n")


def test_the_process_cache_reads_each_process_once_and_only_what_may_have_changed(host: Path) -> None:
    """A scan lists /proc only when a process was started (the last pid in
    loadavg moved), reads only processes it has not read, reads young ones
    again without a listing, and everything once a minute."""
    from tcflow.containers.procfs import CLK_TCK, ProcCache

    proc = host / "proc"
    now = [1000.0]
    for pid in (1, 50):
        _stat(host, pid, 0)
    (proc / "loadavg").write_text("0.00 0.00 0.00 1/100 50\n")
    cache = ProcCache(str(proc), clock=lambda: now[0])
    assert cache.refresh() and (cache.reads, cache.listings) == (2, 1)
    assert cache.dockerd_pids() == [50]
    now[0] += 1
    assert not cache.refresh() and (cache.reads, cache.listings) == (2, 1)  # nothing started: nothing read

    _proc(host, 100, f"0::/docker/{A}\n", "ns-web")           # a new container's process, started just now
    _stat(host, 100, int((now[0] - 1) * CLK_TCK))
    _docker(host, A, "web", 100)
    (proc / "loadavg").write_text("0.00 0.00 0.00 1/100 100\n")
    assert cache.refresh() and (cache.reads, cache.listings) == (3, 2)  # one listing, one new process read
    assert [g.label for g in containers.scan(str(proc), cache=cache)] == ["web"]
    now[0] += 1
    assert cache.refresh() and (cache.reads, cache.listings) == (4, 2)  # young: read again, no listing
    now[0] += 10
    assert not cache.refresh() and cache.reads == 4  # old now, and no process started

    os.rename(proc / "100", host / "gone")                      # pid 100 used again by another process
    _proc(host, 100, "0::/init.scope\n", "host")
    _stat(host, 100, int(now[0] * CLK_TCK))
    (proc / "loadavg").write_text("0.00 0.00 0.00 1/100 101\n")
    assert cache.refresh() and cache.reads == 5  # a new /proc entry (inode): read, though the pid is known
    assert containers.scan(str(proc), cache=cache) == []
    now[0] += 61
    assert cache.refresh() and cache.reads == 8  # the minute's full pass reads everything again


def test_with_cgroup_events_the_cache_lists_proc_only_once_a_minute_or_when_asked(host: Path) -> None:
    """Events mode: a new pid is no reason to list /proc; the processes an
    event names are read without a listing; a listing comes when asked for
    and with the minute's full pass."""
    from tcflow.containers.procfs import ProcCache

    proc = host / "proc"
    now = [1000.0]
    for pid in (1, 50):
        _stat(host, pid, 0)
    (proc / "loadavg").write_text("0.00 0.00 0.00 1/100 50\n")
    cache = ProcCache(str(proc), clock=lambda: now[0], events=True)
    assert cache.refresh() and cache.listings == 1
    _proc(host, 100, f"0::/docker/{A}\n", "ns-web")
    _stat(host, 100, int(now[0] * 100))
    _docker(host, A, "web", 100)
    (proc / "loadavg").write_text("0.00 0.00 0.00 1/100 100\n")
    now[0] += 1
    assert not cache.refresh() and cache.listings == 1  # a new pid alone: nothing read
    assert cache.add([100, 999]) and (cache.reads, cache.listings) == (3, 1)  # 999 does not exist
    assert [g.label for g in containers.scan(str(proc), cache=cache)] == ["web"]
    assert cache.refresh() and (cache.reads, cache.listings) == (3, 1)  # young: scan again, no read, no listing
    now[0] += 0.01
    assert not cache.refresh()  # ... but not at every step of a burst: at most every YOUNG_RESCAN_S
    assert abs(cache.quiet_s() - (ProcCache.YOUNG_RESCAN_S - 0.01)) < 1e-6  # the loop may sleep that long
    now[0] += ProcCache.YOUNG_RESCAN_S
    assert cache.refresh() and (cache.reads, cache.listings) == (3, 1)
    now[0] += 10
    assert not cache.refresh()
    assert abs(cache.quiet_s() - (ProcCache.FULL_S - 11.26)) < 1e-6  # nothing young: until the minute's pass
    cache.list_due = True
    assert cache.quiet_s() == 0.0
    assert cache.refresh() and cache.listings == 2 and not cache.list_due
    now[0] += 60
    assert cache.refresh() and cache.listings == 3


def _cgroup_tree(root: Path) -> Path:
    tree = root / "cgroup"
    for d in ("docker", "system.slice/ssh.service", "kubepods.slice/kubepods-burstable.slice",
              "user.slice/user-1000.slice", f"docker/{B}"):
        (tree / d).mkdir(parents=True)
    return tree


def test_cgroup_events_name_each_new_container_cgroup_and_nothing_else(tmp_path: Path) -> None:
    from tcflow.containers.cgroups import CgroupEvents
    from tcflow.containers.procfs import container_cgroup

    tree = _cgroup_tree(tmp_path)
    ev = CgroupEvents(lambda p: container_cgroup(p) is not None, [(str(tree), "/")])
    try:
        # the root, docker, system.slice, kubepods.slice and its burstable slice; never
        # a service, a user's slice or a container's own cgroup
        assert ev.active and ev.watched == 5 and ev.complete
        assert not ev.drain() and ev.take() == {}  # B was there before: the first scan finds it
        (tree / "docker" / A).mkdir()
        (tree / "system.slice" / f"docker-{C}.scope").mkdir()
        pod = tree / "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice"
        pod.mkdir()                                                  # a new pod: watched from now on
        (pod / f"cri-containerd-{D}.scope").mkdir()
        (tree / "user.slice/user-1000.slice" / f"docker-{D}.scope").mkdir()  # a user's: never watched
        (tree / "system.slice/ssh.service" / f"docker-{D}.scope").mkdir()    # inside a service: never
        (tree / "docker" / "notes.txt").write_text("")                       # not a directory
        (tree / "docker" / A / "inner").mkdir()                              # inside a container
        assert ev.drain()
        ev.drain()
        assert ev.take() == {f"/docker/{A}": str(tree / "docker" / A),
                             f"/system.slice/docker-{C}.scope": str(tree / "system.slice" / f"docker-{C}.scope"),
                             f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice/"
                             f"cri-containerd-{D}.scope": str(pod / f"cri-containerd-{D}.scope")}
        assert ev.take() == {}
    finally:
        ev.close()


def test_cgroup_events_are_bounded_and_say_when_they_are_not_complete(tmp_path: Path) -> None:
    from tcflow.containers.cgroups import MAX_DEPTH, CgroupEvents

    tree = _cgroup_tree(tmp_path)
    ev = CgroupEvents(lambda p: False, [(str(tree), "/")], max_watches=3)
    assert ev.watched == 3 and not ev.complete
    ev.close()
    deep = tmp_path / "deep"
    (deep / "/".join(f"l{i}.slice" for i in range(MAX_DEPTH + 3))).mkdir(parents=True)
    ev = CgroupEvents(lambda p: False, [(str(deep), "/")])
    assert ev.watched == MAX_DEPTH and ev.complete
    ev.close()


def test_discovery_reads_the_new_containers_processes_not_all_of_proc(host: Path) -> None:
    """With cgroup events, a container that starts costs a read of its
    cgroup.procs and of its processes: /proc is not listed again."""
    from tcflow.containers.discovery import Discovery

    tree = _cgroup_tree(host)
    d = Discovery(str(host / "proc"), mode="events", cgroup_roots=[(str(tree), "/")])
    try:
        assert d.mode == "events" and d.cgroups is not None and d.cgroups.fd in d.fds()
        d.plan({})
        assert d.quiet_s() > 30  # nothing pending, nothing young: the loop need not ask before the minute's pass
        listings, reads = d.cache.listings, d.cache.reads
        for pid in range(2000, 2300):  # a busy host: processes come and go, no container among them
            _proc(host, pid, "0::/system.slice/cron.service\n", "host")
        assert d.plan({}).new == [] and (d.cache.listings, d.cache.reads) == (listings, reads)
        (tree / "docker" / A).mkdir()
        (tree / "docker" / A / "cgroup.procs").write_text("")  # made, still empty
        d.drain()
        d.plan({})
        assert list(d.pending) == [str(tree / "docker" / A)] and d.quiet_s() == 0.0  # pending: ask again soon
        _proc(host, 100, f"0::/docker/{A}\n", "ns-web")
        _docker(host, A, "web", 100)
        (tree / "docker" / A / "cgroup.procs").write_text("100\n")
        d.plan({})  # the namespace is a plain file here: entering it fails, so no plan entry, but it was read
        # read when named (and again while its cgroup is followed): no listing
        assert d.cache.listings == listings and d.cache.reads > reads
        assert d.cache.in_containers() == [(100, os.stat(host / "proc" / "100").st_ino, ("docker", A))]
    finally:
        d.close()


def test_the_loop_waits_on_fds_past_1024() -> None:
    """A node agent holds about 8 fds a container namespace: 200 containers
    are past select()'s 1,024. The loop's wait takes any fd."""
    import resource

    from tcflow.engine.loop import _wait

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2100:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard}: cannot open an fd past 2,048")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 2100), hard))
    r, w = os.pipe()
    high = os.dup2(r, 2048)
    try:
        assert _wait([high], 0) == set()
        os.write(w, b"x")
        assert _wait([high], 1.0) == {high}
    finally:
        for fd in (r, w, high):
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
