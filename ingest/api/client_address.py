"""The client's address, for limits per client: the connection's peer, or a trusted proxy's header.

Behind a reverse proxy every connection comes from the proxy, so the proxy
names the client in a header; that header is believed only when the operator
names it (TALLY_TRUSTED_PROXY_HEADER), since any client can send one. IPv6
clients are grouped by /64, the block one subscriber usually holds, or one
client would have 2^64 fresh addresses to spread over.
"""

from __future__ import annotations

import ipaddress

from flask import request

from tally.ingest.api.problems import Problem


def _given(header: str) -> str:
    """The last entry of the header: the one the nearest proxy, the trusted one, appended."""
    value = request.headers.get(header)
    if value is None:  # reached directly, not through the proxy: the peer is the client
        return request.remote_addr or ""
    return value.rsplit(",", 1)[-1].strip()


def client_address(header: str = "") -> str:
    """The client's address as text (an IPv6 client as its /64 network)."""
    raw = _given(header) if header else request.remote_addr or ""
    try:
        address = ipaddress.ip_address(raw.strip("[]"))
    except ValueError:
        if not header:  # not an IP socket (a Unix socket, say): its name is all there is
            return raw or "unknown"
        raise Problem(400, "invalid-header", "Bad request",
                      f"the {header} header does not end in an IP address") from None
    if address.version == 6 and address.ipv4_mapped:
        return str(address.ipv4_mapped)
    if address.version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)
