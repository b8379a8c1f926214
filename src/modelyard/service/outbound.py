"""Where the server may send requests to URLs its users chose (webhook receivers).

https to globally routable addresses only, unless an admin allowed http, or hosts and
networks by configuration; checked when subscribing, with an injectable resolver.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from modelyard.domain.errors import InvalidInput

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Sequence[str]]


def system_resolver(host: str, port: int) -> list[str]:
    """The addresses the operating system resolves ``host`` to, in its order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True, slots=True)
class OutboundPolicy:
    allow_http: bool = False
    allowed_hosts: frozenset[str] = frozenset()
    allowed_networks: tuple[IPNetwork, ...] = ()
    resolver: Resolver = system_resolver

    def check_url(self, url: str) -> None:
        """Refuse a URL the server must not send to (InvalidInput, code webhook_url_refused)."""
        parts = urlsplit(url)
        host = (parts.hostname or "").lower().rstrip(".")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        if parts.scheme == "http" and not self.allow_http and host not in self.allowed_hosts:
            raise _refused(url, "only https is allowed (an admin may allow http)")
        if host in self.allowed_hosts:
            return
        try:
            addresses = [ipaddress.ip_address(host)]
        except ValueError:
            try:
                addresses = [ipaddress.ip_address(a) for a in self.resolver(host, port)]
            except OSError as exc:
                raise _refused(url, f"cannot resolve {host}: {exc}") from None
        for address in addresses:
            allowed = any(address in network for network in self.allowed_networks)
            if not allowed and not address.is_global:
                raise _refused(url, f"{host} is {address}, not a public address")


def _refused(url: str, reason: str) -> InvalidInput:
    return InvalidInput(f"{url}: {reason}", code="webhook_url_refused")
