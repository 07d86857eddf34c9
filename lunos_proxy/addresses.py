"""What one client is, by address: the unit that per-address connection caps,
address limits and bans count (the server, the abuse plugin, the admin API)."""

from __future__ import annotations

import ipaddress

__all__ = ["subject"]


def subject(address: str) -> str:
    """What address limits and bans count: the address itself, but for IPv6 its
    /64 (one subscriber's usual allocation: one client could otherwise rotate
    through 2**64 addresses); an IPv4-mapped IPv6 address is its IPv4."""
    if ":" not in address:
        return address  # IPv4 (or not an address at all): as it is
    try:
        ip = ipaddress.IPv6Address(address.split("%", 1)[0])
    except ValueError:
        return address
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network((ip, 64), strict=False))
