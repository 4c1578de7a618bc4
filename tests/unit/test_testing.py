"""The plugin's meter without a kernel: flow patterns, and what each
assertion says when it fails (the meter's figures set by hand)."""

from __future__ import annotations

import pytest

from tcflow.model.classes import NAMES
from tcflow.testing.meter import Flow, Meter, flow_matcher


def flow(proto: str, remote: tuple[str, int | None], sent: int = 100, icmp_type: int | None = None,
         family: str = "ipv4") -> Flow:
    return Flow(proto, family, ("198.18.0.1", 40000 if remote[1] is not None else None), remote, icmp_type,
                sent, 0, max(sent - 28, 0), 0, 1, 0)


def done(**bytes_: int) -> Meter:
    m = Meter("tcfa", netns="x")
    m.key, m.done = "x/tcfa", True
    m.bytes.update(bytes_)
    m.packets.update({k: 1 for k, v in bytes_.items() if v})
    return m


def test_flow_patterns() -> None:
    dns, web6 = flow("udp", ("198.18.0.2", 53)), flow("tcp", ("2001:db8::2", 443), family="ipv6")
    assert flow_matcher("udp 198.18.0.2:53")(dns) and not flow_matcher("udp 198.18.0.2:54")(dns)
    assert flow_matcher("udp *:53")(dns) and flow_matcher("udp")(dns) and not flow_matcher("tcp")(dns)
    assert flow_matcher("tcp [2001:db8::2]:443")(web6) and flow_matcher("tcp 2001:db8:0::2")(web6)
    assert flow_matcher("* 198.18.0.2")(dns) and flow_matcher(lambda f: f.remote[1] == 53)(dns)
    for bad in ("", "udp 198.18.0.2:99999", "udp host.example:53", "udp a b"):
        with pytest.raises(ValueError):
            flow_matcher(bad)


def test_assertion_messages_name_what_differs() -> None:
    m = done(L4_UDP_SEND_V4=9100, L3_UDP_SEND_V4=9464, L3_RAW_SEND_V6=72)
    m.flows = [flow("udp", ("198.18.0.2", 53), 9464), flow("icmpv6", ("ff02::1:ff00:2", None), 72, 135, "ipv6")]
    m.assert_bytes(L4_UDP_SEND_V4=9100)
    with pytest.raises(AssertionError) as e:
        m.assert_bytes({"L4_UDP_SEND_V4": 9100}, exact=True)
    assert str(e.value).splitlines() == [
        "x/tcfa: 2 of 3 classes differ in bytes",
        "class           expected  got",
        "L4_UDP_SEND_V4  9100      9100",
        "L3_UDP_SEND_V4  0         9464  <-",
        "L3_RAW_SEND_V6  0         72    <-"]
    m.assert_only_flows(["udp 198.18.0.2:53"])  # neighbour discovery is allowed
    with pytest.raises(AssertionError, match="1 unexpected flow\n"):
        m.assert_only_flows(["udp 198.18.0.2:53"], neighbor_discovery=False)
    with pytest.raises(AssertionError) as e:
        m.assert_no_traffic(family=6)
    assert "expected no IPv6, got 1 packets" in str(e.value) and "icmpv6 type 135" in str(e.value)
    m.assert_no_traffic(protocol="tcp")
    with pytest.raises(AssertionError, match="exactly 2 flows match 'udp', got 1"):
        m.assert_flow_count("udp", exactly=2)
    assert m.total(family=4, layer="L3") == 9464 and m.total(layer="L4", direction="send") == 9100
    assert set(m.bytes) == set(NAMES)
    m.flows_complete = False
    with pytest.raises(AssertionError, match="cannot tell"):
        m.assert_only_flows(["*"])


def test_the_report_of_a_failure_lists_the_classes_and_flows() -> None:
    m = done(L4_TCP_SEND_V4=5)
    m.flows = [flow("tcp", ("198.18.0.2", 80), 45)]
    text = m.report()
    assert text.startswith("tcflow meter on x/tcfa") and "L4_TCP_SEND_V4  1        5" in text
    assert "tcp 198.18.0.1:40000 <-> 198.18.0.2:80  1          45" in text
