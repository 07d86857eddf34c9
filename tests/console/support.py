"""A browser-like client for the console (cookies, CSRF tokens) and configs with it on."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.auth_support import admin, auth_config
from tests.conftest import Running, start_site

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def console_config(provider_url: str, *, console: dict[str, Any] | None = None,
                   **extra: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {"enabled": True, **(console or {})}
    return auth_config(provider_url, console=settings, **extra)


WEBHOOK_SECRET = "webhook-secret-0123456789"
PUBLIC_URL = "https://console.example.test"


def mail_config(provider_url: str, mailbox: Mailbox, **console: Any) -> dict[str, Any]:
    """The console with its messages sent to `mailbox`, links on `PUBLIC_URL`."""
    return console_config(provider_url, console={
        "delivery": "webhook", "webhook_url": mailbox.url, "webhook_secret": WEBHOOK_SECRET,
        "public_url": PUBLIC_URL, **console})


class Browser:
    """Keeps cookies like a browser and sends the last page's CSRF token with forms."""

    def __init__(self, gw: Running) -> None:
        self.base = gw.url
        self.jar = aiohttp.CookieJar(unsafe=True)  # loopback IPs get cookies too
        self.http = aiohttp.ClientSession(cookie_jar=self.jar)
        self.csrf = ""
        self.last: aiohttp.ClientResponse | None = None

    async def close(self) -> None:
        await self.http.close()

    async def _remember(self, response: aiohttp.ClientResponse) -> str:
        self.last = response
        text = await response.text()
        found = _CSRF.search(text)
        if found:
            self.csrf = found.group(1)
        return text

    async def get(self, path: str, **kwargs: Any) -> tuple[int, str]:
        async with self.http.get(self.base + path, **kwargs) as r:
            return r.status, await self._remember(r)

    async def post(self, path: str, data: dict[str, str] | None = None, *, csrf: bool = True,
                   **kwargs: Any) -> tuple[int, str]:
        form = dict(data or {})
        if csrf and "csrf" not in form:
            if not self.csrf:
                await self.get("/console/sign-in")
            form["csrf"] = self.csrf
        async with self.http.post(self.base + path, data=form, **kwargs) as r:
            return r.status, await self._remember(r)

    def cookie(self) -> str:
        for c in self.jar:
            if c.key == "lunos_console":
                return c.value
        return ""

    async def sign_in_with_key(self, key: str) -> None:
        status, text = await self.post("/console/sign-in/key", {"key": key})
        assert status == 200 and "<h1>Overview</h1>" in text, (status, text[:500])


async def new_account(gw: Running, name: str = "Ada Lovelace",
                      email: str = "ada@example.com") -> str:
    status, account = await admin(gw, "POST", "/admin/accounts", {"name": name, "email": email})
    assert status == 201, account
    return str(account["id"])


async def new_key(gw: Running, account_id: str, name: str = "ci") -> dict[str, Any]:
    status, made = await admin(gw, "POST", f"/admin/accounts/{account_id}/keys", {"name": name})
    assert status == 201, made
    return dict(made)


class Mailbox:
    """A webhook receiver on loopback: the messages the console sends."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.signatures: list[str] = []
        self.bodies: list[bytes] = []
        self.url = ""
        self.delay = 0.0  # seconds the mail service takes to answer
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        async def receive(request: web.Request) -> web.Response:
            await asyncio.sleep(self.delay)
            self.bodies.append(await request.read())
            self.messages.append(await request.json())
            self.signatures.append(request.headers.get("X-Lunos-Signature", ""))
            return web.Response(status=204)

        app = web.Application()
        app.router.add_post("/mail", receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        port = await start_site(self._runner)
        self.url = f"http://127.0.0.1:{port}/mail"

    async def received(self, count: int = 1) -> list[dict[str, Any]]:
        """The messages, once `count` have come (the console sends them behind its answer)."""
        for _ in range(500):
            if len(self.messages) >= count:
                return self.messages
            await asyncio.sleep(0.01)
        raise AssertionError(f"{count} message(s) never came; {len(self.messages)} did")

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def mailbox() -> AsyncIterator[Mailbox]:
    box = Mailbox()
    await box.start()
    yield box
    await box.close()


@pytest.fixture
async def browsers() -> AsyncIterator[Any]:
    made: list[Browser] = []

    def make(gw: Running) -> Browser:
        b = Browser(gw)
        made.append(b)
        return b

    yield make
    for b in made:
        await b.close()


async def signed_in(gw: Running, browsers: Any, email: str = "ada@example.com") -> tuple[str, dict[str, Any], Browser]:
    """A new account with one key ("ci"), and a browser signed in with that key."""
    account = await new_account(gw, email=email)
    made = await new_key(gw, account)
    browser: Browser = browsers(gw)
    await browser.sign_in_with_key(made["key"])
    return account, made, browser
