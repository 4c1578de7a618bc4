"""Traffic for tests and benchmarks: the project's one generator package.

- ``frames``: crafted Ethernet frames (scapy), fragmented datagrams, seeded
  hostile frames, and ``send_frames()`` to put them on an interface inside
  a namespace (AF_PACKET: they cross its hooks as they are). Needs scapy.
- ``sockets``: real TCP and UDP between namespaces with exact byte tallies:
  ``udp_send``/``UdpSink``, ``tcp_send``/``TcpSink``, request-response
  exchanges, a bulk sender, a round-robin sender of many flows.
- ``iperf``: iperf3 between the two namespaces of a veth pair.

tcflow's tests and bench import it as ``tests.traffic_gen``; installed,
tcflow ships the same files as ``tcflow.testing.traffic_gen`` (the pytest
plugin's ``tcflow_traffic`` fixture). Modules import only tcflow and the
standard library (frames: scapy too), relative to nothing else here.
"""
