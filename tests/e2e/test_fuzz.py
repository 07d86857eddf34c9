"""Property-based fuzzing of every public endpoint and the admin API.

A real gateway with the whole pipeline (request_id → logger → auth → abuse
→ meter → router) runs on loopback in front of the fake provider. Hypothesis
sends it bodies, headers, paths and methods a hostile or careless client
might; every fuzzed string carries a canary. Whatever is sent, the answer
is a success or an error in the shape the client's SDK expects, it is JSON
(never plain text), it never contains the canary, and the gateway keeps
answering `/healthz` at once. Raw sockets cover what an HTTP client library
refuses to send (broken request lines, control bytes in headers).

Bounded in time: a few hundred examples in all, about half a minute.
"""

from __future__ import annotations

import asyncio
import json
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


async def _healthy(session: aiohttp.ClientSession, gw: Running) -> None:
    began = time.monotonic()
    async with session.get(gw.url + "/healthz") as r:
        assert r.status == 200
    assert time.monotonic() - began < 1.0, "the gateway stalled"


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
