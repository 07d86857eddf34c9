"""Who the client is on the network: trusted proxies and allow/deny lists.

`X-Forwarded-For` is believed only from peers listed in `trusted_proxies`
(empty by default: the header is ignored). Then the client is the right-most
address in the header that is not itself a trusted proxy, so a client cannot
choose its own address by sending the header itself.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import msgspec

from lunos_proxy.addresses import subject

__all__ = ["AddressRules", "Networks", "client_address", "subject"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class AddressRules(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    # When not empty, only these addresses/CIDRs are served.
    allow: list[str] = msgspec.field(default_factory=list)
    deny: list[str] = msgspec.field(default_factory=list)
    # Peers whose X-Forwarded-For is believed (load balancers). Never by default.
    trusted_proxies: list[str] = msgspec.field(default_factory=list)
    shadow: bool = False  # deny/allow counted, not enforced

    def __post_init__(self) -> None:
        for where in (self.allow, self.deny, self.trusted_proxies):
            for cidr in where:
                try:
                    ipaddress.ip_network(cidr, strict=False)
                except ValueError:
                    raise ValueError(f"{cidr!r} is not an address or CIDR") from None


class Networks:
    """A set of CIDRs to test addresses against."""

    __slots__ = ("_nets",)

    def __init__(self, cidrs: Sequence[str]) -> None:
        nets = (ipaddress.ip_network(c, strict=False) for c in cidrs)
        self._nets: tuple[Network, ...] = tuple(nets)

    def __bool__(self) -> bool:
        return bool(self._nets)

    def __contains__(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self._nets)


def client_address(peer: str, forwarded_for: str | None, trusted: Networks) -> str:
    """The client's address: `peer`, or from X-Forwarded-For if `peer` is trusted."""
    if not trusted or not forwarded_for or peer not in trusted:
        return peer
    hops = [h.strip() for h in forwarded_for.split(",")]
    for hop in reversed(hops):
        if hop and hop not in trusted:
            try:
                return str(ipaddress.ip_address(hop))
            except ValueError:
                return peer  # a garbled header: fall back to what we saw
    return hops[0] or peer
