"""What an endpoint is, for the plugin's settings and the monitor's and daemon's sockets
(standard library only, imports nothing)."""

from __future__ import annotations


def is_ipv6(endpoint: str) -> bool:
    """A ``tcp://[v6-literal]:port`` endpoint (ZeroMQ needs the IPV6 option for it)."""
    return endpoint.startswith("tcp://[")
