"""Who a connection comes from, as the limits of what one client may hold count it."""

from __future__ import annotations

import socket
from urllib.parse import unquote


def counted_address(address: str) -> str:
    """Who a client is counted as (its failed authentications, its health watches, its
    metrics connections): an IPv6 address's /64, the block one subscriber usually holds
    whole (an IPv4 one mapped into IPv6 as itself), any other address as it is. Runs
    before every authenticated call, hence socket's parser rather than ipaddress (a
    hundred times slower)."""
    if ":" not in address:
        return address
    try:
        packed = socket.inet_pton(socket.AF_INET6, address)
    except OSError:  # "unix:...", or a scoped address ("fe80::1%eth0")
        return address
    if packed[:12] == _IPV4_MAPPED:
        return socket.inet_ntop(socket.AF_INET, packed[12:])
    return socket.inet_ntop(socket.AF_INET6, packed[:8] + bytes(8)) + "/64"


_IPV4_MAPPED = bytes(10) + b"\xff\xff"


def client_address(peer: str) -> str:
    """The host of a gRPC peer string ("ipv4:10.0.0.7:51234", "ipv6:%5B::1%5D:5", "unix:...").

    gRPC percent-encodes an IPv6 peer's brackets (grpc/grpc#30852; older releases sent
    "ipv6:[::1]:5"): left encoded, the address would not parse and escape its /64."""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        return unquote(rest.rpartition(":")[0]).strip("[]")
    return peer
