"""Where a provider's host name points, for `upstream_http`'s new connections.

    names = AddressCache(ttl=10.0)
    for address in await names.addresses("api.example.com", 443):  # (family, ip, port)
        ...                                    # try each; then:
    names.prefer("api.example.com", 443, addresses, address)   # the one that answered
    names.forget("api.example.com", 443)       # none answered: look it up again next time

A name is looked up with `loop.getaddrinfo` (in the executor, never on the
loop), once per `ttl` seconds: the connections opening meanwhile share the
one lookup, and a connection that gives up leaves it to the others.
getaddrinfo reports no TTL of its own: 10 s (`DNS_TTL_SECONDS`) is aiohttp's
default cache time, short next to a DNS failover's, while a burst of new
connections resolves once.
"""

from __future__ import annotations

import asyncio
import socket

__all__ = ["DNS_TTL_SECONDS", "Address", "AddressCache"]

DNS_TTL_SECONDS = 10.0
# Names kept before starting over: they come from the config; bounded anyway.
_NAMES = 1024

Address = tuple[int, str, int]  # (family, address, port): what create_connection takes


class AddressCache:
    def __init__(self, ttl: float = DNS_TTL_SECONDS) -> None:
        self.ttl = ttl
        # (host, port): when the addresses expire, and the addresses.
        self._addresses: dict[tuple[str, int], tuple[float, list[Address]]] = {}
        self._resolving: dict[tuple[str, int], asyncio.Task[list[Address]]] = {}

    async def addresses(self, host: str, port: int) -> list[Address]:
        """The name's addresses, in the order to try them (raises an OSError
        when it has none)."""
        loop = asyncio.get_running_loop()
        key = (host, port)
        cached = self._addresses.get(key)
        if cached is not None and cached[0] > loop.time():
            return cached[1]
        lookup = self._resolving.get(key)
        if lookup is None:
            lookup = self._resolving[key] = loop.create_task(self._lookup(loop, key))
            lookup.add_done_callback(lambda _: self._resolving.pop(key, None))
        # A connection that gives up (cancelled, timed out) leaves the lookup to the others.
        return await asyncio.shield(lookup)

    def prefer(self, host: str, port: int, addresses: list[Address], address: Address) -> None:
        """The next connections try first the address that answered (in a new
        list: others may be going through the old one)."""
        key = (host, port)
        cached = self._addresses.get(key)
        if cached is not None and cached[1] is addresses:
            rest = [a for a in addresses if a != address]
            self._addresses[key] = (cached[0], [address, *rest])

    def forget(self, host: str, port: int) -> None:
        """None of the name's addresses could be reached: look it up again."""
        self._addresses.pop((host, port), None)

    async def _lookup(self, loop: asyncio.AbstractEventLoop, key: tuple[str, int]) -> list[Address]:
        infos = await loop.getaddrinfo(*key, type=socket.SOCK_STREAM)
        addresses: list[Address] = []
        for family, _, _, _, sockaddr in infos:
            address = (int(family), str(sockaddr[0]), int(sockaddr[1]))
            if address not in addresses:
                addresses.append(address)
        if not addresses:
            raise socket.gaierror(f"No address for {key[0]}.")
        if len(self._addresses) >= _NAMES:
            self._addresses.clear()
        self._addresses[key] = (loop.time() + self.ttl, addresses)
        return addresses
