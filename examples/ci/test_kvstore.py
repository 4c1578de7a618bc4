"""What kvstore.py puts on the wire, exactly: a test a team copies into its
own repository. It uses only tcflow's pytest fixtures (installed with
tcflow; nothing to import) and runs as root:

    sudo .venv/bin/pytest examples/ci

``tcflow_veth`` gives two fresh network namespaces joined by a veth pair
(a: 198.18.0.1 / 2001:db8::1, b: .2 / ::2); the server runs in b, the
client in a, and ``tcflow_veth.meter()`` counts on a's interface: the
client's whole view of the network.
"""

import json
import socket
import sys
import time
from pathlib import Path

import pytest

APP = str(Path(__file__).with_name("kvstore.py"))
PORT = 8080


@pytest.fixture
def server(tcflow_veth):
    """kvstore.py serving in namespace b (killed with the namespaces after the test)."""
    v = tcflow_veth
    v.b.popen([sys.executable, APP, "serve", "--bind", v.b.ipv4, "--port", str(PORT)])
    for _ in range(100):  # until it listens: at most 5 s
        with v.a.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            if s.connect_ex((v.b.ipv4, PORT)) == 0:
                break
        time.sleep(0.05)
    else:
        pytest.fail("kvstore.py did not start listening")
    time.sleep(0.1)  # the probe's FIN and ACKs are over before a meter starts
    return v


def client(v, *args):
    r = v.a.run([sys.executable, APP, *args], capture_output=True, text=True, timeout=60)
    return r.returncode, json.loads(r.stdout)


def test_put_is_one_connection_with_exactly_the_bytes_the_client_wrote(server):
    v = server
    with v.meter() as m:
        code, out = client(v, "put", "--server", f"{v.b.ipv4}:{PORT}", "colour", "blue", "size", "9", "shape", "round")
    assert code == 0
    # three requests over one keep-alive connection: one flow, to the server only
    m.assert_flow_count(f"tcp {v.b.ipv4}:{PORT}", exactly=1)
    m.assert_only_flows([f"tcp {v.b.ipv4}:{PORT}"])
    m.assert_no_traffic(family=6)
    # TCP payload on the wire is what the client wrote and read, byte for byte
    m.assert_bytes(L4_TCP_SEND_V4=out["sent"], L4_TCP_RECV_V4=out["received"])
    [flow] = m.flows
    assert (flow.payload_sent, flow.payload_received) == (out["sent"], out["received"])


def test_a_refused_client_retries_exactly_as_often_as_asked(tcflow_veth):
    v = tcflow_veth  # nothing listens: every attempt is refused
    with v.meter() as m:
        code, out = client(v, "get", "--server", f"{v.b.ipv4}:{PORT}", "--retries", "2", "colour")
    assert code == 1 and out == {"error": "refused", "attempts": 3}
    m.assert_flow_count(f"tcp {v.b.ipv4}:{PORT}", exactly=3)  # each attempt from a port of its own
    m.assert_bytes(L4_TCP_SEND_V4=0, L4_TCP_RECV_V4=0)  # SYNs and RSTs carry no payload
