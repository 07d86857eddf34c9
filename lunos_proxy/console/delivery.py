"""How sign-in links and codes reach account holders.

A `Delivery` has one method. To add one (SMTP, a mail API), write a class
like these and pick it in `delivery_for`:

    class SmtpDelivery:
        async def send(self, message: SignInMessage) -> None:
            await asyncio.to_thread(smtp_send, message.to, message.subject, message.text)

`send` raises `DeliveryError` when the message could not be handed over;
the sign-in page says the same either way, so nobody learns from it which
emails have accounts.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Protocol

import aiohttp
import msgspec
import structlog

from .settings import ConsoleConfig

__all__ = ["Delivery", "DeliveryError", "LogDelivery", "SignInMessage", "WebhookDelivery"]

log = structlog.get_logger("lunos.console")


class SignInMessage(msgspec.Struct, kw_only=True):
    to: str
    subject: str
    text: str
    link: str
    code: str
    account_id: str


class DeliveryError(Exception):
    """The message could not be handed over."""


class Delivery(Protocol):
    async def send(self, message: SignInMessage) -> None: ...


class LogDelivery:
    """Development: the link goes to the proxy's log (never the email or the code)."""

    async def send(self, message: SignInMessage) -> None:
        log.warning(
            "console_sign_in_link",
            account_id=message.account_id,
            link=message.link,
            note="development delivery: anyone who reads this log can sign in",
        )


class WebhookDelivery:
    """POSTs the message as JSON; ``X-Lunos-Signature: sha256=<HMAC of the body>``."""

    def __init__(self, url: str, secret: str, timeout: float = 10.0) -> None:
        self.url, self.secret = url, secret.encode()
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    async def send(self, message: SignInMessage) -> None:
        body = msgspec.json.encode(
            {f: getattr(message, f) for f in ("to", "subject", "text", "link", "code")}
        )
        signature = hmac.new(self.secret, body, hashlib.sha256).hexdigest()
        headers = {"Content-Type": "application/json", "X-Lunos-Signature": f"sha256={signature}"}
        try:
            async with (
                aiohttp.ClientSession(timeout=self.timeout) as session,
                session.post(self.url, data=body, headers=headers) as response,
            ):
                if response.status >= 300:
                    raise DeliveryError(f"webhook answered {response.status}")
        except (aiohttp.ClientError, TimeoutError) as e:
            raise DeliveryError(f"webhook unreachable: {type(e).__name__}") from None


def delivery_for(config: ConsoleConfig) -> Delivery:
    if config.delivery == "webhook":
        return WebhookDelivery(config.webhook_url, config.webhook_secret)
    return LogDelivery()
