"""Signing in and out of the console: email link or code, API key; cookie, CSRF, limits."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import time
from http.cookies import SimpleCookie
from typing import Any

import aiohttp
from cryptography.fernet import Fernet

from lunos_proxy.crypto import load_secrets
from tests.auth_support import admin
from tests.conftest import GatewayFactory, Running
from tests.console.support import (
    WEBHOOK_SECRET,
    Browser,
    Mailbox,
    console_config,
    mail_config,
    new_account,
    new_key,
    signed_in,
)
from tests.fakes import FakeProvider
from tests.logcapture import Captured


def local_link(gw: Running, link: str) -> str:
    assert link.startswith("https://console.example.test/console/sign-in/link?t=")
    return link.removeprefix("https://console.example.test")


async def test_the_only_cookie_is_an_httponly_samesite_session_cookie_scoped_to_the_console(
    provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(console_config(provider.base_url))
    async with aiohttp.ClientSession() as http, http.get(gw.url + "/console/sign-in") as r:
        assert r.status == 200
        cookies = r.headers.getall("Set-Cookie")
    assert len(cookies) == 1
    morsel = next(iter(SimpleCookie(cookies[0]).values()))
    assert morsel.key == "lunos_console"
    assert (morsel["httponly"], morsel["samesite"], morsel["path"], morsel["secure"]) == (
        True, "Lax", "/console", "")
    assert int(morsel["max-age"]) == 43200


async def test_every_console_response_carries_the_security_headers(
    provider: FakeProvider, make_gateway: GatewayFactory
) -> None:
    gw = await make_gateway(console_config(provider.base_url))
    async with aiohttp.ClientSession() as http:
        for path in ("/console/sign-in", "/console/keys", "/console/nope"):
            async with http.get(gw.url + path, allow_redirects=False) as r:
                assert r.headers["Content-Security-Policy"].startswith("default-src 'none'; script-src 'self'")
                assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
                assert (r.headers["X-Content-Type-Options"], r.headers["X-Frame-Options"],
                        r.headers["Referrer-Policy"], r.headers["Cache-Control"]) == (
                    "nosniff", "DENY", "same-origin", "no-store")
        async with http.get(gw.url + "/console/keys", allow_redirects=False) as r:
            assert (r.status, r.headers["Location"]) == (303, "/console/sign-in")


async def test_console_is_absent_unless_enabled(provider: FakeProvider, make_gateway: GatewayFactory) -> None:
    config = console_config(provider.base_url)
    config["console"]["enabled"] = False
    gw = await make_gateway(config)
    async with aiohttp.ClientSession() as http, http.get(gw.url + "/console/sign-in") as r:
        assert r.status == 404
        assert (await r.json())["error"]["type"] == "invalid_request_error"


async def test_email_link_signs_in_once_on_a_new_session(
    provider: FakeProvider, make_gateway: GatewayFactory, mailbox: Mailbox, browsers: Any
) -> None:
    gw = await make_gateway(mail_config(provider.base_url, mailbox))
    await new_account(gw)
    browser: Browser = browsers(gw)
    status, text = await browser.post("/console/sign-in/email", {"email": "Ada@Example.com"})
    assert status == 200 and "Check your email" in text
    [message] = await mailbox.received()
    assert message["to"] == "Ada@Example.com" and re.fullmatch(r"\d{6}", message["code"])
    before = browser.cookie()
    status, text = await browser.get(local_link(gw, message["link"]))
    assert status == 200 and 'id="confirm-sign-in"' in text
    token = re.search(r'name="t" value="([^"]+)"', text)
    assert token is not None
    status, text = await browser.post("/console/sign-in/link", {"t": token.group(1)})
    assert status == 200 and "<h1>Overview</h1>" in text
    assert browser.cookie() not in ("", before)  # a new session, not the one from before

    other: Browser = browsers(gw)
    status, text = await other.post("/console/sign-in/link", {"t": token.group(1)})
    assert status == 401 and "invalid, used or expired" in text


async def test_webhook_message_is_signed_with_the_configured_secret(
    provider: FakeProvider, make_gateway: GatewayFactory, mailbox: Mailbox, browsers: Any
) -> None:
    gw = await make_gateway(mail_config(provider.base_url, mailbox))
    await new_account(gw)
    await browsers(gw).post("/console/sign-in/email", {"email": "ada@example.com"})
    await mailbox.received()
    [body], [signature] = mailbox.bodies, mailbox.signatures
    assert signature == "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert set(json.loads(body)) == {"to", "subject", "text", "link", "code"}


async def test_email_code_signs_in_and_a_wrong_code_does_not(
    provider: FakeProvider, make_gateway: GatewayFactory, mailbox: Mailbox, browsers: Any
) -> None:
    gw = await make_gateway(mail_config(provider.base_url, mailbox))
    await new_account(gw)
    browser: Browser = browsers(gw)
    await browser.post("/console/sign-in/email", {"email": "ada@example.com"})
    code = (await mailbox.received())[0]["code"]
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    status, text = await browser.post("/console/sign-in/code", {"code": wrong})
    assert status == 401 and "wrong or has expired" in text
    status, text = await browser.post("/console/sign-in/code", {"code": code})
    assert status == 200 and "<h1>Overview</h1>" in text
    status, text = await browser.get("/console/keys")
    assert status == 200 and "<h1>API keys</h1>" in text


async def test_an_email_code_signs_in_once_even_from_a_copy_of_the_session_it_was_sent_to(
    provider: FakeProvider, make_gateway: GatewayFactory, mailbox: Mailbox, browsers: Any
) -> None:
    gw = await make_gateway(mail_config(provider.base_url, mailbox))
    await new_account(gw)
    browser: Browser = browsers(gw)
    await browser.post("/console/sign-in/email", {"email": "ada@example.com"})
    code = (await mailbox.received())[0]["code"]
    # The memory store keeps the session (the pending code with it) in the
    # cookie: a copy taken before signing in still holds the pending code.
    copy: Browser = browsers(gw)
    copy.jar.update_cookies({"lunos_console": browser.cookie()}, aiohttp.client.URL(gw.url))
    copy.csrf = browser.csrf
    status, text = await browser.post("/console/sign-in/code", {"code": code})
    assert status == 200 and "<h1>Overview</h1>" in text
    status, text = await copy.post("/console/sign-in/code", {"code": code})
    assert status == 401 and "wrong or has expired" in text
    status, text = await copy.get("/console/keys")
    assert status == 200 and "<h1>Sign in</h1>" in text


async def test_unknown_email_gets_the_same_answer_and_no_message(
    provider: FakeProvider, make_gateway: GatewayFactory, mailbox: Mailbox, browsers: Any
) -> None:
    gw = await make_gateway(mail_config(provider.base_url, mailbox))
    await new_account(gw)
    browser: Browser = browsers(gw)
    mailbox.delay = 0.5  # a slow mail service must not show which emails have an account
    started = time.monotonic()
    status, unknown = await browser.post("/console/sign-in/email", {"email": "nobody@example.com"})
    assert status == 200 and "Check your email" in unknown
    status, known = await browsers(gw).post("/console/sign-in/email", {"email": "ada@example.com"})
    assert status == 200 and "Check your email" in known
    assert time.monotonic() - started < 0.4  # neither answer waited for the mail service
    [message] = await mailbox.received()  # the known email's, and only that one
    assert message["to"] == "ada@example.com"
    status, _ = await browser.post("/console/sign-in/code", {"code": "123456"})
    assert status == 401


async def test_development_delivery_logs_the_link_and_never_the_code_or_email(
    captured_logs: Captured, provider: FakeProvider, make_gateway: GatewayFactory, browsers: Any
) -> None:
    gw = await make_gateway(console_config(provider.base_url))
    account = await new_account(gw)
    browser: Browser = browsers(gw)
    await browser.post("/console/sign-in/email", {"email": "ada@example.com"})
    [line] = [x for x in captured_logs.lines() if x.get("event") == "console_sign_in_link"]
    assert line["account_id"] == account
    assert line["link"].startswith(gw.url + "/console/sign-in/link?t=")
    assert "ada@example.com" not in captured_logs.text
    status, text = await browser.get(line["link"].removeprefix(gw.url))
    assert status == 200 and 'id="confirm-sign-in"' in text
    code = _pending_code(gw, browser.cookie())
    assert code not in captured_logs.text.replace(line["link"], "")
    assert set(line) <= {"event", "account_id", "link", "note", "level", "timestamp", "logger"}


def _pending_code(gw: Running, cookie: str) -> str:
    """The code a session waits for, recovered from its cookie (the memory
    store's encrypted session) and the server's secret: only its keyed hash
    is kept, so every six-digit code is tried against it."""
    secrets = load_secrets(gw.gateway.config.secrets)
    fernet = Fernet(base64.urlsafe_b64encode(bytes.fromhex(secrets.key_hash("lunos console session v1"))))
    pending = json.loads(fernet.decrypt(cookie.encode()))["session"]["pending"]
    for n in range(1_000_000):
        code = f"{n:06d}"
        if secrets.key_hash(f"console-code:{pending['nonce']}:{code}") == pending["code"]:
            return code
    raise AssertionError("no six-digit code matches the pending hash")


async def test_api_key_signs_in_and_revoked_or_unknown_keys_do_not(
    provider: FakeProvider, make_gateway: GatewayFactory, browsers: Any
) -> None:
    gw = await make_gateway(console_config(provider.base_url))
    account = await new_account(gw)
    made = await new_key(gw, account)
    browser: Browser = browsers(gw)
    status, text = await browser.post("/console/sign-in/key", {"key": "lk-not-a-real-key"})
    assert status == 401 and "not a valid key" in text
    await browser.sign_in_with_key(made["key"])
    status, _ = await browser.get("/console/keys")
    assert status == 200
    await admin(gw, "POST", f"/admin/keys/{made['id']}/revoke")
    status, text = await browsers(gw).post("/console/sign-in/key", {"key": made["key"]})
    assert status == 401


async def test_a_limited_or_rotated_key_does_not_sign_in_and_a_revoked_one_ends_its_session(
    provider: FakeProvider, make_gateway: GatewayFactory, browsers: Any
) -> None:
    gw = await make_gateway(console_config(provider.base_url))
    account = await new_account(gw)
    path = f"/admin/accounts/{account}/keys"
    limited = (await admin(gw, "POST", path, {"name": "m", "allowed_models": ["gpt-test"]}))[1]
    expiring = (await admin(gw, "POST", path, {"name": "e", "expires_in": 3600}))[1]
    rotated = await new_key(gw, account, "r")
    assert (await admin(gw, "POST", f"/admin/keys/{rotated['id']}/rotate", {}))[0] == 201
    for made in (limited, expiring, rotated):  # the rotated one is in its grace period
        status, text = await browsers(gw).post("/console/sign-in/key", {"key": made["key"]})
        assert status == 401 and "sign in by email instead" in text
    made = await new_key(gw, account)
    browser: Browser = browsers(gw)
    await browser.sign_in_with_key(made["key"])
    assert (await browser.get("/console/keys"))[0] == 200
    await admin(gw, "POST", f"/admin/keys/{made['id']}/revoke")
    status, text = await browser.get("/console/keys")  # the session went with the key
    assert status == 200 and "<h1>Sign in</h1>" in text


async def test_forms_without_the_session_csrf_token_or_from_another_origin_are_refused(
    provider: FakeProvider, make_gateway: GatewayFactory, browsers: Any
) -> None:
    gw = await make_gateway(console_config(provider.base_url))
    _, made, browser = await signed_in(gw, browsers)
    status, text = await browser.post("/console/keys", {"name": "x"}, csrf=False)
    assert status == 403 and "expired" in text
    status, _ = await browser.post("/console/keys", {"name": "x", "csrf": "forged"})
    assert status == 403
    status, text = await browser.post("/console/keys", {"name": "x"},
                                      headers={"Origin": "https://evil.example"})
    assert status == 403 and "another site" in text
    keys = (await admin(gw, "GET", f"/admin/accounts/{made['account_id']}/keys"))[1]["keys"]
    assert [k["name"] for k in keys] == ["ci"]


async def test_sign_out_deletes_the_redis_session_so_a_copied_cookie_is_dead(
    provider: FakeProvider, make_gateway: GatewayFactory, redis_url: str, browsers: Any
) -> None:
    gw = await make_gateway(console_config(provider.base_url, store_url=redis_url,
                                           store_options={"prefix": "console-signout:", "timeout": 10, "connect_timeout": 10}))
    made = await new_key(gw, await new_account(gw, email="signout@example.com"))
    browser: Browser = browsers(gw)
    await browser.sign_in_with_key(made["key"])
    stolen = browser.cookie()
    assert len(stolen) == 43  # a random id only: the session itself is in Redis
    status, text = await browser.post("/console/sign-out")
    assert status == 200 and "<h1>Sign in</h1>" in text
    async with aiohttp.ClientSession(cookies={"lunos_console": stolen}) as http, http.get(
        gw.url + "/console/keys", allow_redirects=False
    ) as r:
        assert (r.status, r.headers["Location"]) == (303, "/console/sign-in")


async def test_idle_session_ends(provider: FakeProvider, make_gateway: GatewayFactory, browsers: Any) -> None:
    gw = await make_gateway(console_config(provider.base_url, console={"idle_timeout_seconds": 0.2}))
    _, _made, browser = await signed_in(gw, browsers)
    await asyncio.sleep(0.5)
    status, text = await browser.get("/console/keys")
    assert status == 200 and "<h1>Sign in</h1>" in text


async def test_sign_in_attempts_are_limited_per_address(
    provider: FakeProvider, make_gateway: GatewayFactory, browsers: Any
) -> None:
    gw = await make_gateway(console_config(provider.base_url, console={"sign_in": {"per_address": 3}}))
    browser: Browser = browsers(gw)
    statuses = [(await browser.post("/console/sign-in/key", {"key": f"lk-wrong-{i}"}))[0] for i in range(4)]
    assert statuses == [401, 401, 401, 429]
    assert browser.last is not None and int(browser.last.headers["Retry-After"]) >= 1


async def test_bad_keys_get_the_address_banned_by_the_abuse_plugin(
    provider: FakeProvider, make_gateway: GatewayFactory, browsers: Any
) -> None:
    config = console_config(provider.base_url)
    config["pipeline"].append({"name": "abuse", "settings": {"auth_failures": {"limit": 2, "window": 60, "ban_seconds": 60}}})
    gw = await make_gateway(config)
    made = await new_key(gw, await new_account(gw))
    browser: Browser = browsers(gw)
    statuses = [(await browser.post("/console/sign-in/key", {"key": f"lk-wrong-{i}"}))[0] for i in range(3)]
    assert statuses == [401, 401, 429]
    # Banned now: even the right key is refused from this address, on the API too.
    status, text = await browser.post("/console/sign-in/key", {"key": made["key"]})
    assert status == 429 and "Too many failed authentication attempts" in text
    async with aiohttp.ClientSession() as http, http.get(
        gw.v1 + "/models", headers={"Authorization": f"Bearer {made['key']}"}
    ) as r:
        assert r.status == 429


async def test_console_root_leads_to_sign_in(provider: FakeProvider, make_gateway: GatewayFactory) -> None:
    gw = await make_gateway(console_config(provider.base_url))
    async with aiohttp.ClientSession() as http:
        for path in ("/console", "/console/"):
            async with http.get(gw.url + path) as r:
                assert (r.status, r.url.path) == (200, "/console/sign-in")


async def test_static_files_and_forged_links(provider: FakeProvider, make_gateway: GatewayFactory, browsers: Any) -> None:
    gw = await make_gateway(console_config(provider.base_url))
    async with aiohttp.ClientSession() as http:
        async with http.get(gw.url + "/console/static/console.js") as r:
            assert (r.status, r.content_type) == (200, "text/javascript")
            assert "navigator.clipboard.writeText" in await r.text()
        async with http.get(gw.url + "/console/static/../settings.py") as r:
            assert r.status == 404
    browser: Browser = browsers(gw)
    status, text = await browser.get("/console/sign-in/link?t=eyJ9.forged")
    assert status == 401 and "invalid or has expired" in text
