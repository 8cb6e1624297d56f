"""Outbound URL guard for webhooks (SSRF): no calls into the server's own networks by default.

A webhook URL is written by whoever edits a scenario or a channel, and the request is made
from inside the installation: pointed at ``http://127.0.0.1:8000/admin``, ``http://10.0.0.5``
or the cloud metadata service (``http://169.254.169.254/latest/meta-data/``), it would reach
what the author could not reach themselves. So a target is refused when any address it
resolves to is not a public unicast address: loopback, private (RFC 1918, unique local
``fc00::/7``), link-local (``169.254/16`` with the metadata service, ``fe80::/10``), carrier-grade
NAT, multicast, reserved, unspecified, IPv4-mapped forms of those; and the names
``localhost``, ``*.localhost``, ``metadata.google.internal``.

``Settings.campaign_webhook_allowed_networks`` (CIDRs) lets such targets through on purpose: an
on-premise CRM at ``10.1.2.3`` (``["10.1.2.0/24"]``), or the local servers tests run
(``["127.0.0.0/8"]``).

It is checked twice: when a scenario or channel is validated (``check``: an IP literal or a
refused name is a 422 naming the field; a name is resolved when it can be) and again at each
send (``pin``), because DNS may answer differently later. ``pin`` returns the URL rewritten
to the checked address, with the original host for the ``Host`` header and TLS SNI, so the
connection goes where the check looked (a name that rebinds between check and connect does
not get a second lookup).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAMES = frozenset({"localhost", "localhost.localdomain", "metadata.google.internal", "metadata", "instance-data"})


class UnsafeUrl(ValueError):
    """The URL is not http(s), has no host, or points at an address outside the public internet."""


def networks(values: Iterable[str]) -> tuple[Network, ...]:
    """Parse CIDRs (``10.0.0.0/8``, ``::1/128``; a bare address is its own /32 or /128)."""
    out: list[Network] = []
    for value in values:
        try:
            out.append(ipaddress.ip_network(str(value).strip(), strict=False))
        except ValueError as error:
            raise UnsafeUrl(f"{value!r} is not a network in CIDR form (e.g. 10.0.0.0/8): {error}") from None
    return tuple(out)


def _public(address: Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def _allowed(address: Address, allowed: Sequence[Network]) -> bool:
    if _public(address):
        return True
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return any(address in net or (mapped is not None and mapped in net) for net in allowed)


def _split(url: str) -> tuple[str, str, int]:
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise UnsafeUrl(f"{url!r} is not an http(s) URL")
    parts = urlsplit(url)
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise UnsafeUrl(f"{url!r} has no host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise UnsafeUrl(f"{url!r} has an invalid port") from None
    return parts.scheme, host, port


def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _refuse(url: str, address: Address | str) -> UnsafeUrl:
    return UnsafeUrl(f"{url!r} points at {address}, an internal address (loopback, private, link-local or "
                     "metadata); list its network in campaign_webhook_allowed_networks to allow it")


def check(url: str, allowed: Sequence[Network] = ()) -> None:
    """Raise UnsafeUrl for a URL that is refused now: a refused literal or name, or a name resolving to one.

    A name that does not resolve (yet) passes: the send checks again.
    """
    _, host, port = _split(url)
    literal = _literal(host)
    if literal is not None:
        if not _allowed(literal, allowed):
            raise _refuse(url, literal)
        return
    if (host in _NAMES or host.endswith(".localhost")) and not allowed:
        raise _refuse(url, host)
    try:
        found = _resolve(host, port)
    except OSError:
        return
    for address in found:
        if not _allowed(address, allowed):
            raise _refuse(url, address)


@dataclass(frozen=True)
class Pinned:
    """Where to connect: the URL with the checked address, the ``Host`` header and the TLS SNI name."""

    url: str
    host_header: str
    sni: str


def pin(url: str, allowed: Sequence[Network] = ()) -> Pinned:
    """Resolve, check every address, and return the URL pointing at the first; UnsafeUrl or OSError otherwise."""
    scheme, host, port = _split(url)
    literal = _literal(host)
    if literal is None and (host in _NAMES or host.endswith(".localhost")) and not allowed:
        raise _refuse(url, host)
    addresses = [literal] if literal is not None else _resolve(host, port)
    for address in addresses:
        if not _allowed(address, allowed):
            raise _refuse(url, address)
    parts = urlsplit(url)
    host_header = parts.netloc.rpartition("@")[2]
    if literal is not None:
        return Pinned(url, host_header, host)
    first = addresses[0]
    netloc = f"[{first}]" if first.version == 6 else str(first)
    if parts.port is not None:
        netloc += f":{parts.port}"
    return Pinned(urlunsplit((scheme, netloc, parts.path, parts.query, parts.fragment)), host_header, host)


def _resolve(host: str, port: int) -> list[Address]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: list[Address] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if address not in seen:
            seen.append(address)
    if not seen:
        raise OSError(f"{host} has no address")
    return seen
