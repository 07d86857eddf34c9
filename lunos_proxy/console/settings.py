"""The ``console:`` section of the YAML (off unless enabled)."""

from __future__ import annotations

from typing import Literal

import msgspec

from ..bounds import AtLeastOne, Seconds, SecondsOrZero

__all__ = ["ConsoleConfig", "SignInLimits"]


class SignInLimits(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Sign-in attempts (email requests, codes, pasted keys) allowed per window.

    Counted in the store, so every instance shares them; failed key and code
    attempts are also reported to the abuse plugin, whose auth-failure rules
    ban the address (on every instance) past its own threshold."""

    per_address: AtLeastOne = 20
    per_account: AtLeastOne = 5  # codes sent, and codes tried, per account
    window_seconds: Seconds = 600.0


class ConsoleConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    enabled: bool = False
    # Where links in sign-in messages point, e.g. https://lunos.example.com
    # (the console is under /console there). Required with a webhook: taken
    # from the request's Host header, an attacker could aim a victim's
    # sign-in link at their own server.
    public_url: str = ""
    # How sign-in links and codes reach people: "log" prints the link to the
    # proxy's log (development only: anyone reading the log can sign in);
    # "webhook" POSTs {"to", "subject", "text", "link", "code"} as JSON to
    # `webhook_url`, signed with `webhook_secret` (X-Lunos-Signature: sha256=HMAC).
    delivery: Literal["log", "webhook"] = "log"
    webhook_url: str = ""
    webhook_secret: str = ""
    code_ttl_seconds: Seconds = 600.0  # a sign-in link or code works once, this long
    idle_timeout_seconds: Seconds = 1800.0  # signed out after this long without a request
    absolute_timeout_seconds: Seconds = 43_200.0  # and this long after signing in, at most
    same_site: Literal["Lax", "Strict"] = "Lax"
    # The session cookie's Secure flag; None: set when server.tls is. Set it
    # true behind a TLS-terminating load balancer.
    secure_cookie: bool | None = None
    sign_in: SignInLimits = msgspec.field(default_factory=SignInLimits)
    # Redeem a rotated key's predecessor for this long (the admin API's default).
    rotation_grace_seconds: SecondsOrZero = 86_400.0
    # The service's API documentation for account holders, linked from the
    # console's first steps (empty: no link).
    docs_url: str = ""

    def __post_init__(self) -> None:
        if self.delivery == "webhook" and not (self.webhook_url and self.public_url):
            raise ValueError("delivery webhook needs webhook_url and public_url")
