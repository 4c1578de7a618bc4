"""Containers on this host, found without asking their runtime: one module
per runtime (docker, oci for containerd and CRI-O, podman, lxc for LXC and
systemd-nspawn) behind one small interface (base.Runtime); procfs walks /proc
and asks them; discovery turns what changed into a plan for the engine;
status is `tcflow status --containers`."""

from tcflow.containers.base import Container, Group, read_small
from tcflow.containers.docker import docker_roots, dockerds, netns_dirs
from tcflow.containers.procfs import ProcCache, parse_cgroup, scan

__all__ = ["Container", "Group", "ProcCache", "docker_roots", "dockerds", "netns_dirs", "parse_cgroup", "read_small",
           "scan"]
