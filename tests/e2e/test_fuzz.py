"""Property-based fuzzing of every public endpoint and the admin API.

A real gateway with the whole pipeline (request_id → logger → auth → abuse
→ meter → router) runs on loopback in front of the fake provider. Hypothesis
sends it bodies, headers, paths and methods a hostile or careless client
might; every fuzzed string carries a canary. Whatever is sent, the answer
is a success or an error in the shape the client's SDK expects, it is JSON
(never plain text), it never contains the canary, and the gateway keeps
answering `/healthz` at once. Raw sockets cover what an HTTP client library
refuses to send (broken request lines, control bytes in headers).

Also: streaming requests with hostile fields (every event JSON), the admin
API with a token of every scope, none and a wrong one, and the console's
pages and forms, signed out (with hostile Origin, Cookie and Host headers;
any redirect stays on /console) and signed in with a valid CSRF token.

Bounded in time: 120 examples per property, about 35 s on a loaded 2-core
machine (each example is a few loopback requests; no sleeps).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lunos_proxy.admin.auth import PATH_IDS
from lunos_proxy.keys import valid_id
from tests.auth_support import ADMIN_TOKEN, STATIC_KEY, auth_config, static_entry
from tests.conftest import GatewayFactory, Running
from tests.fakes import FakeProvider

CANARY = "qz7canary"
BCANARY = CANARY.encode()

PUBLIC = [
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/completions"),
    ("POST", "/v1/embeddings"),
    ("POST", "/v1/responses"),
    ("GET", "/v1/models"),
    ("POST", "/v1/messages"),
    ("POST", "/v1/messages/count_tokens"),
]
ADMIN = [
    ("GET", "/admin/accounts/{id}"),
    ("PATCH", "/admin/accounts/{id}"),
    ("DELETE", "/admin/accounts/{id}"),
    ("GET", "/admin/accounts/{id}/export"),
    ("GET", "/admin/accounts/{id}/keys"),
    ("POST", "/admin/accounts/{id}/keys"),
    ("GET", "/admin/keys/{id}"),
    ("POST", "/admin/keys/{id}/revoke"),
    ("POST", "/admin/keys/{id}/rotate"),
    ("GET", "/admin/usage/{id}"),
    ("GET", "/admin/usage/{id}/events"),
    ("GET", "/admin/usage/{id}/balance"),
    ("POST", "/admin/usage/{id}/credits"),
    ("DELETE", "/admin/tokens/{id}"),
    ("POST", "/admin/accounts"),
    ("POST", "/admin/tokens"),
    ("GET", "/admin/audit"),
]
SETTINGS = settings(
    max_examples=120,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large],
)


def config(provider_url: str) -> dict[str, Any]:
    cfg = auth_config(provider_url, static=[static_entry()])
    cfg["server"] = {"max_body_bytes": 262144}
    cfg["pipeline"] = [
        {"name": "request_id"},
        {"name": "logger"},
        cfg["pipeline"][1],  # auth
        {"name": "abuse", "settings": {
            "plans": {"free": {"key": {"requests_per_minute": 1_000_000}}},
            "default_plan": "free",
            "auth_failures": {"limit": 1_000_000},
        }},
        {"name": "meter", "settings": {"flush_interval_seconds": 0.2}},
        {"name": "router", "settings": {"max_attempts": 1}},
    ]
    # The console too, its sign-in limits out of the way so that examples
    # reach the forms behind them.
    cfg["console"] = {"enabled": True, "sign_in": {"per_address": 1_000_000, "per_account": 1_000_000}}
    return cfg


@pytest.fixture
async def fuzz_gw(provider: FakeProvider, make_gateway: GatewayFactory) -> Running:
    return await make_gateway(config(provider.base_url))


# -- what is sent -----------------------------------------------------------

def _marked(s: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Every fuzzed string carries the canary somewhere."""
    return st.tuples(s, s).map(lambda p: p[0] + CANARY + p[1])


_text = _marked(st.text(max_size=20))
_huge = st.integers(min_value=300, max_value=400).map(lambda n: int("9" * n))
_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(), _huge, st.floats(allow_nan=True), _text,
)
_json = st.recursive(
    _scalar,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_text, inner, max_size=4)),
    max_leaves=12,
)
# A request that looks right enough to reach deep into the pipeline, with
# hostile values in the fields the gateway reads.
_model = st.one_of(_text, st.sampled_from(["gpt-test", "claude-test", "gpt-alias"]), _huge, _json)
_budget = st.one_of(st.integers(), _huge, _text, st.floats(allow_nan=True), st.none())
_plausible = st.fixed_dictionaries(
    {"model": _model},
    optional={
        "messages": st.one_of(
            st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "system"]), "content": _text}),
                     max_size=3),
            _json,
        ),
        "max_tokens": _budget,
        "max_completion_tokens": _budget,
        "stream": st.one_of(st.booleans(), _json),
        "input": _json,
        "prompt": _json,
        "n": _budget,
    },
)


def _deep(depth: int) -> bytes:
    return b'{"model": "gpt-test", "x": ' + b"[" * depth + b"]" * depth + b"}"


_bodies = st.one_of(
    _plausible.map(lambda v: json.dumps(v).encode()),
    _json.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200).map(lambda b: b + BCANARY),
    st.integers(min_value=500, max_value=5000).map(_deep),
    # invalid UTF-8 inside a string the gateway reads
    st.sampled_from([b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80"]).map(
        lambda b: b'{"model": "' + BCANARY + b + b'", "messages": []}'
    ),
)
_header_value = _marked(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=30))
_headers = st.dictionaries(
    st.sampled_from([
        "Content-Type", "Accept", "OpenAI-Organization", "OpenAI-Project", "anthropic-version",
        "anthropic-beta", "X-Forwarded-For", "X-Forwarded-Host", "Host", "Cookie", "Origin",
        "Content-Encoding", "Transfer-Encoding-Not", "X-Custom-" + CANARY, "User-Agent",
    ]),
    _header_value,
    max_size=5,
)
_auth = st.sampled_from(["good", "none", "bad", "anthropic"])


def _auth_headers(kind: str) -> dict[str, str]:
    if kind == "good":
        return {"Authorization": f"Bearer {STATIC_KEY}"}
    if kind == "anthropic":
        return {"x-api-key": STATIC_KEY}
    if kind == "bad":
        return {"Authorization": f"Bearer lk-{CANARY}"}
    return {}


# -- what must come back ------------------------------------------------------

def _is_sdk_error(body: Any) -> bool:
    if not isinstance(body, dict):
        return False
    if body.get("type") == "error":  # Anthropic
        err = body.get("error")
        return isinstance(err, dict) and isinstance(err.get("type"), str) and isinstance(err.get("message"), str)
    err = body.get("error")  # OpenAI
    return (isinstance(err, dict) and isinstance(err.get("message"), str) and isinstance(err.get("type"), str)
            and "param" in err and "code" in err)


def _is_admin_error(body: Any) -> bool:
    err = body.get("error") if isinstance(body, dict) else None
    return isinstance(err, dict) and isinstance(err.get("message"), str)


def _no_canary(status: int, headers: Any, raw: bytes) -> None:
    assert BCANARY not in raw, f"{status}: the answer echoes client input: {raw[:300]!r}"
    for name, value in headers.items():
        assert CANARY not in name and CANARY not in value, f"header {name} echoes client input"


# `/healthz` answers in about a millisecond; the bound is generous because
# this machine is shared and a test run can be descheduled for a second or
# more. A gateway stuck on an input (a loop, a parser pinned on a deep body)
# misses it by far: the header, body and idle timeouts are 10 s and more.
HEALTHY_WITHIN = 5.0


async def _healthy(session: aiohttp.ClientSession, gw: Running) -> None:
    began = time.monotonic()
    async with session.get(gw.url + "/healthz") as r:
        assert r.status == 200
    assert time.monotonic() - began < HEALTHY_WITHIN, "the gateway stalled"


def _check_public(status: int, headers: Any, raw: bytes) -> None:
    _no_canary(status, headers, raw)
    assert status < 500 or status in (502, 503, 504), f"{status}: {raw[:300]!r}"
    if status >= 400:
        assert headers.get("Content-Type", "").startswith("application/json"), raw[:200]
        body = json.loads(raw)
        assert _is_sdk_error(body), f"{status}: not an SDK error: {raw[:300]!r}"


# -- properties ---------------------------------------------------------------

@SETTINGS
@given(route=st.sampled_from(PUBLIC), body=_bodies, headers=_headers, auth=_auth)
async def test_public_endpoints_answer_in_sdk_shape_and_echo_nothing(
    fuzz_gw: Running, route: tuple[str, str], body: bytes, headers: dict[str, str], auth: str
) -> None:
    method, path = route
    sent = {**headers, **_auth_headers(auth)}
    async with aiohttp.ClientSession(auto_decompress=False, skip_auto_headers=["Content-Type"]) as s:
        async with s.request(method, fuzz_gw.url + path, data=body, headers=sent) as r:
            raw = await r.read()
            _check_public(r.status, r.headers, raw)
        await _healthy(s, fuzz_gw)


_segment = _marked(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E,
                                         exclude_characters="/?#%"), max_size=20))


@SETTINGS
@given(method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]),
       segments=st.lists(_segment, min_size=1, max_size=3), prefix=st.sampled_from(["", "/v1", "/console"]),
       auth=_auth)
async def test_any_method_and_path_is_answered_in_sdk_shape_without_the_path(
    fuzz_gw: Running, method: str, segments: list[str], prefix: str, auth: str
) -> None:
    path = prefix + "/" + "/".join(segments)
    async with aiohttp.ClientSession() as s:
        async with s.request(method, fuzz_gw.url + path, headers=_auth_headers(auth)) as r:
            raw = await r.read()
            _no_canary(r.status, r.headers, raw)
            assert r.status in (400, 401, 403, 404, 405), f"{method} {r.status}: {raw[:200]!r}"
            if method != "HEAD" and not path.startswith("/console"):
                assert _is_sdk_error(json.loads(raw)), raw[:300]
        await _healthy(s, fuzz_gw)


def _audit_holds_only_ids(entries: list[dict[str, Any]]) -> None:
    """A well-formed id the caller sent is what the audit is for (it may well
    spell the canary: `qz7canary` is a fine account id); anything else is not."""
    for entry in entries:
        if entry["target"]:
            assert any(valid_id(kind, entry["target"]) for kind in PATH_IDS.values()), entry
        if entry["account_id"]:
            assert valid_id("account", entry["account_id"]), entry


@SETTINGS
@given(route=st.sampled_from(ADMIN), ident=_segment, body=_bodies)
async def test_admin_routes_refuse_hostile_ids_and_bodies_without_echo(
    fuzz_gw: Running, route: tuple[str, str], ident: str, body: bytes
) -> None:
    method, pattern = route
    path = pattern.replace("{id}", ident)
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as s:
        async with s.request(method, fuzz_gw.admin_url + path, data=body, headers=headers) as r:
            raw = await r.read()
            assert r.status < 500, f"{method} {pattern} {r.status}: {raw[:300]!r}"
            if r.status >= 400:
                _no_canary(r.status, r.headers, raw)
                assert _is_admin_error(json.loads(raw)), raw[:300]
        async with s.get(fuzz_gw.admin_url + "/admin/audit", headers=headers) as r:
            assert r.status == 200
            _audit_holds_only_ids((await r.json())["entries"])
        await _healthy(s, fuzz_gw)


_raw_line = st.one_of(
    st.binary(min_size=1, max_size=120).map(lambda b: b + BCANARY + b"\r\n\r\n"),
    st.tuples(st.sampled_from([b"GET", b"POST", b"G\x00T", b"" + BCANARY]),
              st.binary(max_size=40)).map(
        lambda t: t[0] + b" /v1/" + t[1] + BCANARY + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    ),
    st.binary(max_size=60).map(
        lambda b: b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-" + BCANARY + b": " + b
        + b"\r\nContent-Length: 2\r\n\r\n{}"
    ),
    st.integers(min_value=17000, max_value=40000).map(
        lambda n: b"GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Long: " + BCANARY + b"a" * n + b"\r\n\r\n"
    ),
)


async def _raw_exchange(port: int, data: bytes) -> tuple[bytes, bytes]:
    """(head, body) of the first answer; (b"", b"") when the server just closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(5):
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionResetError):
                return b"", b""
            length = 0
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            return head, await reader.readexactly(length)
    finally:
        writer.close()


@SETTINGS
@given(data=_raw_line)
async def test_malformed_http_is_answered_in_json_that_quotes_nothing(fuzz_gw: Running, data: bytes) -> None:
    port = int(fuzz_gw.url.rsplit(":", 1)[1])
    head, raw = await _raw_exchange(port, data)
    if head:  # a connection closed with no answer is a fair refusal of garbage
        assert BCANARY not in head + raw, (head + raw)[:300]
        status = int(head.split(b" ", 2)[1])
        assert 400 <= status < 600 or status == 200, head
        if status >= 400:
            assert b"application/json" in head.lower(), head
            assert _is_sdk_error(json.loads(raw)), raw[:200]
    async with aiohttp.ClientSession() as s:
        await _healthy(s, fuzz_gw)


# -- streaming ------------------------------------------------------------------

_streaming = st.tuples(_plausible, st.sampled_from(["gpt-test", "claude-test", None])).map(
    lambda t: {**t[0], "stream": True, **({"model": t[1]} if t[1] else {})}
)
STREAMING = [("POST", "/v1/chat/completions"), ("POST", "/v1/completions"), ("POST", "/v1/messages"),
             ("POST", "/v1/responses")]


def _check_events(raw: bytes) -> None:
    """Every `data:` line of a stream is JSON (OpenAI's closing [DONE] aside)."""
    for line in raw.split(b"\n"):
        if line.startswith(b"data:"):
            data = line[5:].strip()
            if data != b"[DONE]":
                json.loads(data)


@SETTINGS
@given(route=st.sampled_from(STREAMING), body=_streaming, auth=st.sampled_from(["good", "anthropic"]))
async def test_streaming_requests_with_hostile_fields_answer_events_or_sdk_errors(
    fuzz_gw: Running, route: tuple[str, str], body: dict[str, Any], auth: str
) -> None:
    method, path = route
    async with aiohttp.ClientSession(auto_decompress=False) as s:
        async with s.request(method, fuzz_gw.url + path, json=body, headers=_auth_headers(auth)) as r:
            raw = await r.read()
            _check_public(r.status, r.headers, raw)
            if r.status == 200 and r.headers.get("Content-Type", "").startswith("text/event-stream"):
                _check_events(raw)
        await _healthy(s, fuzz_gw)


# -- admin API with every scope --------------------------------------------------

_SCOPED: dict[str, str] = {}


async def _scoped_tokens(gw: Running) -> dict[str, str]:
    """A read and an operator token on this gateway (made once per gateway)."""
    tokens = {"full": ADMIN_TOKEN, "none": "", "bad": f"lat-{CANARY}"}
    async with aiohttp.ClientSession() as s:
        for scope in ("read", "operator"):
            key = f"{gw.admin_url}:{scope}"
            if key not in _SCOPED:
                async with s.post(gw.admin_url + "/admin/tokens", json={"name": scope, "scope": scope},
                                  headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as r:
                    assert r.status == 201, await r.text()
                    _SCOPED[key] = (await r.json())["token"]
            tokens[scope] = _SCOPED[key]
    return tokens


ADMIN_LISTS = [("GET", "/admin/accounts"), ("GET", "/admin/tokens"), ("GET", "/admin/routing"),
               ("GET", "/metrics")]  # /admin/reload answers its own {"problems"} shape


@SETTINGS
@given(route=st.sampled_from(ADMIN + ADMIN_LISTS), ident=_segment, body=_bodies,
       scope=st.sampled_from(["read", "operator", "full", "none", "bad"]))
async def test_admin_routes_with_every_scope_refuse_without_echo_or_5xx(
    fuzz_gw: Running, route: tuple[str, str], ident: str, body: bytes, scope: str
) -> None:
    tokens = await _scoped_tokens(fuzz_gw)
    method, pattern = route
    headers = {"Content-Type": "application/json"}
    if tokens[scope]:
        headers["Authorization"] = f"Bearer {tokens[scope]}"
    async with aiohttp.ClientSession() as s:
        async with s.request(method, fuzz_gw.admin_url + pattern.replace("{id}", ident),
                             data=body, headers=headers) as r:
            raw = await r.read()
            assert r.status < 500, f"{scope} {method} {pattern} {r.status}: {raw[:300]!r}"
            if scope in ("none", "bad") and pattern != "/metrics":
                assert r.status == 401, raw[:200]
            if r.status >= 400:
                _no_canary(r.status, r.headers, raw)
                assert _is_admin_error(json.loads(raw)), raw[:300]
        async with s.get(fuzz_gw.admin_url + "/admin/audit",
                         headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as r:
            assert r.status == 200
            _audit_holds_only_ids((await r.json())["entries"])
        await _healthy(s, fuzz_gw)


# -- the console ------------------------------------------------------------------

CONSOLE_GET = ["/console/", "/console/sign-in", "/console/sign-in/code", "/console/sign-in/link",
               "/console/keys", "/console/keys/confirm", "/console/usage", "/console/usage.csv",
               "/console/requests", "/console/budgets", "/console/privacy", "/console/privacy/export",
               "/console/privacy/delete", "/console/privacy/email", "/console/what-we-keep",
               "/console/static/{id}"]
CONSOLE_POST = ["/console/sign-in/email", "/console/sign-in/code", "/console/sign-in/link",
                "/console/sign-in/key", "/console/sign-out", "/console/keys",
                "/console/keys/{id}/revoke", "/console/keys/{id}/rotate", "/console/budgets/alerts",
                "/console/privacy/profile", "/console/privacy/email", "/console/privacy/delete"]
_FIELDS = ["email", "code", "token", "key", "name", "csrf", "next", "confirm", "key_id", "alerts",
           "threshold", "redirect", "return_to"]
_form = st.dictionaries(st.sampled_from(_FIELDS), _marked(st.text(max_size=30)), max_size=5)
_query = st.dictionaries(st.sampled_from([*_FIELDS, "from", "to", "page", "model", "t", "action",
                                          "metric", "range"]),
                         _marked(st.text(max_size=20)), max_size=3)
_console_headers = st.dictionaries(
    st.sampled_from(["Origin", "Referer", "Cookie", "Host", "X-Forwarded-Host", "X-Forwarded-Proto"]),
    _header_value, max_size=3)


def _check_console(status: int, headers: Any, raw: bytes) -> None:
    _no_canary(status, headers, raw)
    assert status < 500, f"{status}: {raw[:300]!r}"
    location = headers.get("Location")
    if location is not None:  # never an open redirect
        assert location.startswith("/console"), location
    if status >= 400 and headers.get("Content-Type", "").startswith("application/json"):
        assert _is_sdk_error(json.loads(raw)), raw[:300]


@SETTINGS
@given(method=st.sampled_from(["GET", "POST"]), index=st.integers(0, 100), ident=_segment,
       form=_form, query=_query, headers=_console_headers)
async def test_console_answers_hostile_forms_queries_and_headers_without_echo(
    fuzz_gw: Running, method: str, index: int, ident: str, form: dict[str, str],
    query: dict[str, str], headers: dict[str, str]
) -> None:
    """Signed out: every page and form refuses or redirects to its own pages,
    never quoting the values, ids, cookies or hosts it was sent."""
    paths = CONSOLE_GET if method == "GET" else CONSOLE_POST
    path = paths[index % len(paths)].replace("{id}", ident)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as s:
        async with s.request(method, fuzz_gw.url + path, params=query, headers=headers,
                             data=form if method == "POST" else None, allow_redirects=False) as r:
            _check_console(r.status, r.headers, await r.read())
        await _healthy(s, fuzz_gw)


_SIGNED_IN: dict[str, str] = {}


async def _console_key(gw: Running) -> str:
    """A key of an account in the store (made once per gateway): static keys
    do not sign in to the console."""
    if gw.url not in _SIGNED_IN:
        admin_headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        async with aiohttp.ClientSession(headers=admin_headers) as s:
            async with s.post(gw.admin_url + "/admin/accounts", json={"name": "Fuzz"}) as r:
                assert r.status == 201, await r.text()
                account = (await r.json())["id"]
            async with s.post(gw.admin_url + f"/admin/accounts/{account}/keys", json={"name": "k"}) as r:
                assert r.status == 201, await r.text()
                _SIGNED_IN[gw.url] = (await r.json())["key"]
    return _SIGNED_IN[gw.url]


async def _console_session(gw: Running) -> tuple[aiohttp.ClientSession, str]:
    """A session signed in with an account's key, and its CSRF token."""
    key = await _console_key(gw)
    jar = aiohttp.CookieJar(unsafe=True)
    s = aiohttp.ClientSession(cookie_jar=jar)
    async with s.get(gw.url + "/console/sign-in") as r:
        csrf = re.search(r'name="csrf" value="([^"]+)"', await r.text())
    assert csrf is not None
    async with s.post(gw.url + "/console/sign-in/key", data={"key": key, "csrf": csrf[1]}) as r:
        page = await r.text()
        assert r.status == 200, page[:300]
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)
    assert csrf is not None
    return s, csrf[1]


# Markup around the canary: a value the console shows back must come out
# escaped (`&lt;b&gt;`, `&#34;`), never as the markup or quote it was sent as.
MARKUP = b"<b>" + BCANARY + b"\"'"
_markup_form = st.dictionaries(
    st.sampled_from(_FIELDS), st.text(max_size=20).map(lambda t: t + MARKUP.decode()), max_size=5)


@SETTINGS
@given(index=st.integers(0, 100), ident=_segment, form=_markup_form, query=_query)
async def test_console_signed_in_refuses_hostile_forms_without_echo(
    fuzz_gw: Running, index: int, ident: str, form: dict[str, str], query: dict[str, str]
) -> None:
    """Signed in, with a valid CSRF token: hostile values in every form and
    query. A value the account keeps (a key's or the profile's name) is shown
    on later pages, escaped; the answer to the post itself never quotes one,
    and no page ever carries the canary as markup."""
    path = CONSOLE_POST[index % len(CONSOLE_POST)].replace("{id}", ident)
    if path in ("/console/sign-out", "/console/privacy/delete"):  # would end the session or account
        path = "/console/keys/" + ident + "/revoke"
    s, csrf = await _console_session(fuzz_gw)
    async with s:
        async with s.post(fuzz_gw.url + path, params=query, data={**form, "csrf": csrf},
                          allow_redirects=False) as r:
            raw = await r.read()
            assert r.status < 500, f"{path} {r.status}: {raw[:300]!r}"
            location = r.headers.get("Location")
            assert location is None or location.startswith("/console"), location
            for name, value in r.headers.items():
                assert CANARY not in name + value, f"header {name} echoes client input"
            for bad in (b"<b>" + BCANARY, BCANARY + b'"'):
                at = raw.find(bad)
                assert at < 0, raw[max(0, at - 200):at + 100]
            if path in ("/console/privacy/profile", "/console/keys"):
                raw = raw.replace(BCANARY, b"")  # the name it keeps, shown back
            assert BCANARY not in raw, f"{path}: the answer echoes client input: {raw[:300]!r}"
        async with s.get(fuzz_gw.url + CONSOLE_GET[index % len(CONSOLE_GET)].replace("{id}", ident),
                         params=query, allow_redirects=False) as r:
            raw = await r.read()
            assert r.status < 500, raw[:300]
            if r.headers.get("Content-Type", "").startswith("text/html"):  # not the JSON export
                for bad in (b"<b>" + BCANARY, BCANARY + b'"'):
                    at = raw.find(bad)
                    assert at < 0, raw[max(0, at - 200):at + 100]
        await _healthy(s, fuzz_gw)
