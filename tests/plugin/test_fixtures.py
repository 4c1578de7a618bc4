"""The plugin's fixtures as a user's test meets them (no import of tcflow
needed; these import only the traffic generators): exact class figures and
flows from real sockets, the assertions' messages, and what a test leaves
behind. Run with `pytest -n 2` too (test_outside.py)."""

from __future__ import annotations

import socket
import subprocess
from typing import Any

import pytest

from tests.traffic_gen.sockets import TcpSink, UdpSink, tcp_send, udp_send


def test_a_udp_sender_of_13_datagrams_of_700_bytes_is_9100_payload_bytes_and_one_flow(tcflow_veth: Any) -> None:
    v = tcflow_veth
    with UdpSink(v.b.netns, v.b.ipv4, 9000) as sink:
        with v.meter() as m:
            sent = udp_send(v.a.netns, v.b.ipv4, 9000, 13, 700)
            assert sink.wait_for(9100)
    assert m.bytes["L4_UDP_SEND_V4"] == sent.payload == 9100
    assert m.bytes["L3_UDP_SEND_V4"] == 13 * (700 + 8 + 20) and m.packets["L3_UDP_SEND_V4"] == 13
    m.assert_bytes(L4_UDP_SEND_V4=9100, L3_UDP_SEND_V4=9464, L4_UDP_RECV_V4=0)
    [flow] = m.flows
    assert (flow.protocol, flow.family, flow.local, flow.remote) == ("udp", "ipv4", sent.local, sent.remote)
    assert (flow.payload_sent, flow.packets_sent, flow.bytes_received) == (9100, 13, 0)
    m.assert_only_flows([f"udp {v.b.ipv4}:9000"])
    m.assert_flow_count("udp *:9000", exactly=1)
    m.assert_no_traffic(family=6)
    m.assert_no_traffic(protocol="tcp")
    assert set(m.bytes) >= {"L4_TCP_SEND_V4", "L3_RAW_RECV_V6", "OTHER_SEND", "MALFORMED_RECV"}  # every class


def test_a_wrong_figure_fails_with_a_table_of_expected_and_got(tcflow_veth: Any) -> None:
    v = tcflow_veth
    with UdpSink(v.b.netns, v.b.ipv6, 9001) as sink:
        with v.meter() as m:
            udp_send(v.a.netns, v.b.ipv6, 9001, 3, 100)
            assert sink.wait_for(300)
    with pytest.raises(AssertionError) as e:
        m.assert_bytes(L4_UDP_SEND_V6=301)
    text = str(e.value)
    assert "1 of 1 classes differ in bytes" in text and "L4_UDP_SEND_V6  301       300  <-" in text, text
    with pytest.raises(AssertionError) as e:
        m.assert_no_traffic(family=6)
    assert "expected no IPv6, got" in str(e.value) and f"udp [{v.a.ipv6}]:" in str(e.value)
    with pytest.raises(AssertionError) as e:
        m.assert_only_flows(["tcp *:443"])  # neighbour discovery is allowed; the UDP flow is not
    assert "1 unexpected flow\n" in str(e.value) and f"<-> [{v.b.ipv6}]:9001  3          " in str(e.value)
    with pytest.raises(ValueError, match="no class L4_UDP_SEND"):
        m.assert_bytes(L4_UDP_SEND=1)


@pytest.mark.parametrize("family", [4, 6])
def test_tcp_payload_both_ways_is_what_the_sockets_moved(tcflow_veth: Any, family: int) -> None:
    v = tcflow_veth
    dst = v.b.ipv4 if family == 4 else v.b.ipv6
    with TcpSink(v.b.netns, dst) as sink:
        with v.meter() as m:
            sent = tcp_send(v.a.netns, dst, sink.address[1], 1_000_003)
    tag = f"V{family}"
    assert m.bytes[f"L4_TCP_SEND_{tag}"] == sent.payload == sink.received == 1_000_003
    assert m.bytes[f"L4_TCP_RECV_{tag}"] == 0  # the sink sends nothing back: only ACKs and its FIN
    m.assert_flow_count(f"tcp *:{sink.address[1]}", exactly=1)
    [flow] = m.flows_matching("tcp")
    assert flow.payload_sent == 1_000_003 and flow.local == sent.local


def test_a_retrying_client_shows_one_flow_per_attempt(tcflow_veth: Any) -> None:
    """Nothing listens: each attempt is refused (a RST), from a new port."""
    v = tcflow_veth
    with v.meter() as m:
        for _ in range(3):
            with v.a.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.settimeout(5)
                assert s.connect_ex((v.b.ipv4, 7)) != 0
    m.assert_flow_count("tcp 198.18.0.2:7", exactly=3)
    with pytest.raises(AssertionError, match=r"at most 2 flows match 'tcp 198.18.0.2:7', got 3"):
        m.assert_flow_count("tcp 198.18.0.2:7", at_most=2)


def test_ping_is_icmp_flows_and_raw_bytes(tcflow_veth: Any) -> None:
    v = tcflow_veth
    with v.meter() as m:
        r = v.a.run(["ping", "-c", "3", "-i", "0.05", "-s", "56", "-W", "2", v.b.ipv4], capture_output=True)
    assert r.returncode == 0, r.stderr
    m.assert_bytes(L3_RAW_SEND_V4=3 * 84, L3_RAW_RECV_V4=3 * 84)
    assert {(f.protocol, f.icmp_type, f.packets_sent, f.packets_received) for f in m.flows} == {
        ("icmp", 8, 3, 0), ("icmp", 0, 0, 3)}  # an echo request and its reply: two flows, by type
    m.assert_only_flows(["icmp 198.18.0.2"])


def test_a_meter_on_any_interface_by_the_factory(tcflow_veth: Any, tcflow_meter: Any) -> None:
    v = tcflow_veth
    with UdpSink(v.b.netns, v.b.ipv4, 9002) as sink:
        with tcflow_meter(v.b.ifname, netns=v.b.netns) as m:
            udp_send(v.a.netns, v.b.ipv4, 9002, 5, 10)
            assert sink.wait_for(50)
    m.assert_bytes(L4_UDP_RECV_V4=50, L4_UDP_SEND_V4=0)


def test_the_generators_are_a_fixture_too(tcflow_veth: Any, tcflow_traffic: Any) -> None:
    v = tcflow_veth
    with v.meter() as m:
        tcflow_traffic.frames.send_frames(v.a.netns, v.a.ifname, [
            tcflow_traffic.frames.udp_frame(v.a.ipv4, v.b.ipv4, 1000, 2000, 33)] * 4)
    m.assert_bytes({"L4_UDP_SEND_V4": 4 * 33}, exact=True, L3_UDP_SEND_V4=4 * 61)


def test_popen_processes_are_killed_and_namespaces_removed_after_the_test(tcflow_lab: Any) -> None:
    v = tcflow_lab.veth(quiet=False)
    p = v.b.popen(["sleep", "600"])
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert v.a.netns in names and v.b.netns in names
    tcflow_lab.close()  # what the fixture does after the test, also when it failed
    assert p.poll() is not None
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert v.a.netns not in names and v.b.netns not in names


def test_asking_before_the_block_ends_is_an_error(tcflow_veth: Any) -> None:
    with tcflow_veth.meter() as m:
        with pytest.raises(RuntimeError, match="still counting"):
            m.assert_bytes(L4_UDP_SEND_V4=0)
