"""The addresses a client takes, read one way wherever an address is given
(`cairn.Client`'s server_address and service_addresses, `secure_connection`,
`insecure_connection`, the `cairn` command's --address):

- a host, with or without its port: `name`, `name:port`, `v6::addr`, `[v6::addr]`,
  `[v6::addr]:port`;
- a URL, `https://host[:port]` (TLS) or `http://host[:port]` (plaintext), whose scheme
  must agree with the connection's TLS;
- a gRPC target (grpc/doc/naming.md): `dns:[//authority/]name[:port]`,
  `ipv4:addr[:port][,addr[:port]...]`, `ipv6:addr` or `ipv6:[addr]:port` lists, whose
  entries without a port get the connection's, and `unix:path`, `unix:///path`,
  `unix-abstract:name`, `vsock:cid:port`, used as written.

A port left unnamed is 443 with TLS and 50051 without. No address holds a control
character, DEL or (but for a socket's path) a space.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

TLS_PORT = 443
PLAINTEXT_PORT = 50051

# Schemes of targets that carry their whole address, which gRPC reads as written.
_WHOLE_SCHEMES = ("unix:", "unix-abstract:", "vsock:")
# Schemes of address lists, whose entries may lack their port.
_LIST_SCHEMES = ("ipv4:", "ipv6:")
_DNS_SCHEME = "dns:"
_URL_SCHEMES = {"http": False, "https": True}
# Characters in no host name, IP address or URL. gRPC's core reads a target as a C
# string: "http://127.0.0.1\x00.example.com:51921" dialled 127.0.0.1:443 in plaintext.
# A socket's path may hold a space, and gRPC reads it.
_UNREADABLE = re.compile("[\x00-\x20\x7f]")
_UNREADABLE_IN_PATH = re.compile("[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Address:
    """An address as given: host (a gRPC target kept whole), the port it names (None:
    none) and the TLS its URL scheme says (None: no scheme says)."""

    host: str
    port: int | None
    tls: bool | None


def is_target(address: str) -> bool:
    """Whether address is a gRPC target with a scheme (`dns:`, `unix:`, ...)."""
    return address.lower().startswith((_DNS_SCHEME, *_WHOLE_SCHEMES, *_LIST_SCHEMES))


def parse(address: str) -> Address:
    """Host, named port and TLS of any form the module docstring lists.

    Raises:
        ValueError: for a port that is not a number from 1 to 65535, a URL of another
            scheme (or with a path), an address holding a control character or a
            space, or an address of no form above.
        TypeError: for an address that is no str.
    """
    _refuse_unreadable(address)
    if is_target(address):
        if "@" in address and not address.lower().startswith(_WHOLE_SCHEMES):
            raise _credentials()  # a socket's path may hold one; no name or address does
        return Address(address, _target_port(address), None)
    if "://" in address:
        return _url(address)
    if "@" in address:
        raise _credentials()
    return Address(*_server(address), None)


def _server(address: str) -> tuple[str, int | None]:
    """`_host_port` of a plain address, whose host must be one: an address of several
    colons is read as a bare IPv6 address, and was taken whatever it held
    ("admin:secret:50051"), as was an empty host (":5"), to fail only once called."""
    host, port = _host_port(address)
    if not host:
        raise ValueError("the address names no host")
    if (address.startswith("[") or ":" in host) and not _is_v6(host):
        raise ValueError("the address is neither host[:port] nor an IPv6 address")
    return host, port


def _is_v6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _refuse_unreadable(address: str) -> None:
    """ValueError for an address gRPC would read as another (or not as written);
    TypeError for one that is no text (None, an address read as bytes)."""
    if not isinstance(address, str):
        raise TypeError(f"an address is text (str), not {type(address).__name__}")
    whole = address.lower().startswith(_WHOLE_SCHEMES)
    found = (_UNREADABLE_IN_PATH if whole else _UNREADABLE).search(address)
    if found:  # where and which, not the text: a URL may hold a password
        raise ValueError(
            f"the address holds {found.group()!r} (character {found.start() + 1}): "
            "no address holds a control character or a space"
        )


def _credentials() -> ValueError:
    # No host holds an "@": it comes with a user or password, which quoting the address
    # in an error (grpc's, or the port's) would show.
    return ValueError(
        "the address holds a user or password (an '@'), which a host[:port] cannot: "
        "give an API key instead"
    )


def target(
    address: str, tls: bool, port: int | str | None = None, *, default: int | None = None
) -> str:
    """The gRPC target that reaches address.

    Args:
        address: any form the module docstring lists.
        tls: whether the connection uses TLS; a URL must agree.
        port: the port given beside the address; an address naming another is refused
            (but for an address list's entries, which keep their own).
        default: the port when neither names one (None: 443 with TLS, 50051 without).

    Raises:
        ValueError: for an address parse refuses, a URL whose scheme contradicts tls,
            a port that is not a number from 1 to 65535, or two different ports.
    """
    _refuse_unreadable(address)
    if address.lower().startswith(_WHOLE_SCHEMES):
        return address  # the whole address: a port beside it means nothing
    parsed = parse(address)  # first: it refuses an address a port's error would quote
    given = None if port is None else _port(str(port), f"the port {str(port)!r}")
    if parsed.tls is not None and parsed.tls != tls:
        scheme = "https" if parsed.tls else "http"
        wanted = "TLS" if tls else "plaintext"
        raise ValueError(f"an {scheme}:// address for a {wanted} connection: choose one")
    fallback = given or default or (TLS_PORT if tls else PLAINTEXT_PORT)
    if parsed.host.lower().startswith(_LIST_SCHEMES):
        return _address_list(parsed.host, fallback)
    if given is not None and parsed.port is not None and parsed.port != given:
        raise ValueError(f"{address!r} names port {parsed.port}, but port {given} was given")
    prefix, name = _dns_split(parsed.host)
    if _named_port(name) is not None:
        return parsed.host
    name = f"[{name}]" if ":" in name and not name.startswith("[") else name
    return f"{prefix}{name}:{parsed.port or fallback}"


def _url(address: str) -> Address:
    """A URL's parts; its text is not quoted in errors (a URL may carry credentials)."""
    parts = urlsplit(address)
    if parts.scheme.lower() not in _URL_SCHEMES:
        raise ValueError(
            f"an address with scheme {parts.scheme!r}:// is none the client reads: "
            "http://host[:port], https://host[:port], host[:port] or a gRPC target"
        )
    if "@" in parts.netloc:  # not dropped in silence: the caller meant it to be sent
        raise _credentials()
    if not parts.hostname or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("the URL is not http://host[:port] or https://host[:port]")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("the URL's port is not a number from 1 to 65535") from None
    if port == 0:
        raise ValueError("the URL's port is not a number from 1 to 65535")
    return Address(parts.hostname, port, _URL_SCHEMES[parts.scheme.lower()])


def _host_port(address: str, whose: str = "the address") -> tuple[str, int | None]:
    """ "host", "host:port", "v6::addr", "[v6::addr]" or "[v6::addr]:port"; whose names
    it in errors, which never quote it: "admin:hunter2" reads as a host and a port."""
    if address.startswith("["):
        host, bracket, rest = address[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"{whose} is not [address] or [address]:port")
        return host, _port(rest[1:], f"the port of {whose}") if rest else None
    if address.count(":") == 1:  # more than one: a bare IPv6 address
        host, _, port = address.partition(":")
        return host, _port(port, f"the port of {whose}")
    return address, None


def _port(text: str, whose: str) -> int:
    # isdigit alone takes "²" (which int() refuses with the value in its message) and
    # "٣" (which int() reads as 3).
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) < 65536:
        raise ValueError(f"{whose} is not a number from 1 to 65535")
    return int(text)


def _target_port(address: str) -> int | None:
    """The port a target names: a dns: name's, an address list's first entry's (every
    entry read, so that parse refuses a list whose later entry is no address)."""
    lowered = address.lower()
    if lowered.startswith(_WHOLE_SCHEMES):
        return None
    if lowered.startswith(_LIST_SCHEMES):
        scheme, _, entries = address.partition(":")
        v6 = scheme.lower() == "ipv6"
        ports = [_entry(entry, n, v6)[1] for n, entry in enumerate(entries.split(","), 1)]
        return ports[0]
    named = _named_port(_dns_split(address)[1])
    return None if named is None else _port(named, "the port of the address")


def _address_list(address: str, port: int) -> str:
    """An ipv4:/ipv6: list with port added to each entry that lacks one (the entries of
    a list may name different ports, so one naming its own keeps it)."""
    scheme, _, entries = address.partition(":")
    v6 = scheme.lower() == "ipv6"
    written = []
    for number, entry in enumerate(entries.split(","), start=1):
        host, named = _entry(entry, number, v6)
        host = f"[{host}]" if v6 else host
        written.append(f"{host}:{named or port}")
    return f"{scheme}:{','.join(written)}"


def _entry(entry: str, number: int, v6: bool) -> tuple[str, int | None]:
    """Host and port of the entry number of an address list ("ipv4:" entries are `addr`
    or `addr:port`, "ipv6:" ones `addr` or `[addr]:port`); errors name it by its
    number."""
    whose = f"entry {number} of the address list"
    if not entry:
        raise ValueError(f"{whose} is empty")
    host, port = (entry, None) if v6 and not entry.startswith("[") else _host_port(entry, whose)
    # gRPC's core refuses the others only when the channel is made, echoing the address.
    try:
        (ipaddress.IPv6Address if v6 else ipaddress.IPv4Address)(host)
    except ValueError:
        raise ValueError(f"{whose} is not an IPv{6 if v6 else 4} address") from None
    return host, port


def _dns_split(address: str) -> tuple[str, str]:
    """("dns:///", "name:port") of "dns:///name:port", ("", address) of a bare address."""
    if not address.lower().startswith(_DNS_SCHEME):
        return "", address
    rest = address[len(_DNS_SCHEME) :]
    if rest.startswith("//"):  # dns://[authority]/name
        _, slash, name = rest[2:].partition("/")
        if not slash:
            raise ValueError("the address is not dns:[//authority/]name[:port]")
        return address[: len(address) - len(name)], name
    return address[: len(_DNS_SCHEME)], rest


def _named_port(name: str) -> str | None:
    """The port of "name:port" or "[v6]:port"; None for "name", "v6::addr", "[v6]"."""
    if name.startswith("["):
        _, _, rest = name.partition("]")
        return rest[1:] if rest.startswith(":") else None
    if name.count(":") == 1:
        return name.partition(":")[2]
    return None
