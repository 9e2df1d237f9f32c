"""Where the platform may send on a tenant's behalf (webhooks now; HTTPS exports later).

A tenant's URL must be http(s) with a valid host, and must not reach loopback, link-local
(cloud metadata at 169.254.169.254 included), private, shared, multicast or reserved
addresses, unless the operator allows private destinations (`allow_private_destinations`:
the demo and the tests, whose receivers run on this machine). The URL is checked when it
is saved, and again at every delivery after DNS resolution; the delivery then connects to
the address that was checked (`pin`), so a name that re-resolves to a private address
between the check and the connection (DNS rebinding) reaches nothing.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

import httpx

from wattline.errors import Invalid

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789.-")


class UnsafeDestination(Invalid):
    """A URL the platform will not send to; the message says why."""

    def __init__(self, detail: str) -> None:
        """`detail` is the sentence shown to the user."""
        super().__init__("Unsafe destination", detail, field="url")


def parse_destination(url: str, *, allow_private: bool) -> httpx.URL:
    """The URL, parsed and checked without DNS: scheme, host syntax, and an IP literal's class."""
    try:
        parsed = httpx.URL(url)
        host = parsed.raw_host.decode("ascii")  # the IDNA (punycode) form
        port = parsed.port
    except Exception as exc:  # httpx raises InvalidURL, ValueError, UnicodeError, …: all mean "bad URL"
        raise UnsafeDestination(f"not a valid URL ({type(exc).__name__})") from exc
    if parsed.scheme not in ("http", "https"):
        raise UnsafeDestination("only http and https URLs are allowed")
    if not host:
        raise UnsafeDestination("the URL has no host")
    if port is not None and not 0 < port < 65536:
        raise UnsafeDestination("the port is out of range")
    if parsed.userinfo:
        raise UnsafeDestination("credentials in the URL are not allowed (use the signing secret)")
    address = _ip(host)
    if address is not None:
        check_address(address, allow_private=allow_private)
    elif not _valid_hostname(host):
        raise UnsafeDestination(f"{host!r} is not a valid host name")
    return parsed


def check_address(address: IPAddress, *, allow_private: bool) -> None:
    """Refuse an address that is not public, unless private destinations are allowed."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_multicast or address.is_unspecified:
        raise UnsafeDestination(f"{address} is not a unicast address")
    if not address.is_global and not allow_private:
        raise UnsafeDestination(f"{address} is a loopback, private, link-local or reserved address")


@dataclass(frozen=True)
class Pinned:
    """A request target fixed to one checked address: connect to `url` (the address),
    with `headers` and `extensions` that keep the original name for Host, SNI and TLS checks."""

    url: httpx.URL
    headers: dict[str, str]
    extensions: dict[str, str]


def pin(url: str, *, allow_private: bool) -> Pinned:
    """Check the URL, resolve its host and check every address, then pin the first."""
    parsed = parse_destination(url, allow_private=allow_private)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    name = parsed.raw_host.decode("ascii")
    if _ip(name) is not None:
        return Pinned(parsed, {}, {})
    try:
        infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise UnsafeDestination(f"{name} does not resolve ({type(exc).__name__})") from exc
    addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    for address in addresses:  # every answer: a name must not mix public and private addresses
        check_address(address, allow_private=allow_private)
    first = addresses[0]
    host = f"[{first}]" if isinstance(first, ipaddress.IPv6Address) else str(first)
    extensions = {"sni_hostname": name} if parsed.scheme == "https" else {}
    return Pinned(parsed.copy_with(host=host.strip("[]")), {"Host": parsed.netloc.decode("ascii")}, extensions)


def _ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _valid_hostname(host: str) -> bool:
    # httpx gives the IDNA (punycode) form: plain letters, digits, dots and hyphens.
    labels = host.lower().rstrip(".").split(".")
    return (len(host) <= 253 and all(0 < len(label) <= 63 and not label.startswith("-") and not label.endswith("-")
                                     for label in labels)
            and set(host.lower()) <= _HOST_CHARS)
