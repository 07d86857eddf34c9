from __future__ import annotations

import pytest

from plugins.abuse.addresses import AddressRules, Networks, client_address

PROXIES = Networks(["10.0.0.0/8", "::1"])


@pytest.mark.parametrize(
    ("peer", "xff", "expected"),
    [
        ("198.51.100.1", "203.0.113.5", "198.51.100.1"),  # an untrusted peer's header is ignored
        ("10.0.0.2", "203.0.113.5", "203.0.113.5"),
        ("10.0.0.2", "192.0.2.66, 203.0.113.5", "203.0.113.5"),  # the left part is the client's claim
        ("10.0.0.2", "203.0.113.5, 10.0.0.9", "203.0.113.5"),  # skip proxies in the chain
        ("10.0.0.2", "not-an-ip", "10.0.0.2"),
        ("10.0.0.2", None, "10.0.0.2"),
        ("::1", "2001:db8::7", "2001:db8::7"),
    ],
)
def test_client_address_walks_forwarded_for_from_the_right(
    peer: str, xff: str | None, expected: str
) -> None:
    assert client_address(peer, xff, PROXIES) == expected


def test_forwarded_for_is_ignored_without_trusted_proxies() -> None:
    assert client_address("10.0.0.2", "203.0.113.5", Networks([])) == "10.0.0.2"


def test_networks_match_ipv4_mapped_addresses_and_reject_garbage() -> None:
    nets = Networks(["192.0.2.0/24"])
    assert "192.0.2.9" in nets and "::ffff:192.0.2.9" in nets
    assert "192.0.3.1" not in nets and "nonsense" not in nets


def test_a_bad_cidr_is_a_config_error() -> None:
    with pytest.raises(ValueError, match=r"'10\.0\.0\.300/8' is not an address or CIDR"):
        AddressRules(deny=["10.0.0.300/8"])
