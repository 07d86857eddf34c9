"""The privacy proof for traces: a request's content is in no span.

Every case of the privacy suite (tests/privacy/cases.py: every endpoint,
streamed or not, provider errors quoting the prompt, cut streams, aborts,
refusals) is sent through a traced gateway with a fresh canary in the
body, and also in the headers a client controls (its request id, which the
gateway keeps, its tracestate, which goes on to the provider, its user
agent, an arbitrary header) and, in one more case, in every field of a
provider's error. Then every exported span, serialized whole (name,
attributes, events, links, status, trace state, resource), is searched.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import aiohttp
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from tests.auth_support import STATIC_KEY
from tests.conftest import GatewayFactory
from tests.fakes import Behaviour, FakeProvider
from tests.privacy.cases import CASES, Case, behaviour_for, chat
from tests.privacy.test_canary import admin_call, config, send
from tests.tracing.conftest import CLIENT_TRACEPARENT, finished

# A provider error whose every field is the prompt's (what a provider may quote).
ERROR_FIELDS = Case("provider error fields quote the prompt", "/v1/chat/completions",
                    lambda c: json.dumps(chat(c)).encode(), 429)


def error_fields(canary: str) -> dict[str, object]:
    body = {"error": {"message": canary, "type": canary, "code": canary, "param": canary}}
    return {"status": 429, "error_body": json.dumps(body).encode(), "headers": {"x-canary": canary}}


async def test_no_span_holds_the_canary_of_a_body_header_model_name_or_provider_error(
    provider: FakeProvider, make_gateway: GatewayFactory, exporter: InMemorySpanExporter,
    tmp_path: Path,
) -> None:
    cfg = config(provider.base_url, "memory://", f"sqlite://{tmp_path}/records.db")
    cfg["tracing"] = {"enabled": True}
    gw = await make_gateway(cfg)
    account = await admin_call(gw, "POST", "/admin/accounts", {"name": "Traced"})
    tiny = await admin_call(gw, "POST", "/admin/accounts", {"name": "Tiny", "plan": "tiny"})
    valid = (await admin_call(gw, "POST", f"/admin/accounts/{account['id']}/keys", {"name": "k"}))["key"]
    tiny_key = (await admin_call(gw, "POST", f"/admin/accounts/{tiny['id']}/keys", {"name": "t"}))["key"]
    # The static key's account is prepaid, with no credit.
    keys = {"valid": valid, "tiny": tiny_key, "prepaid": STATIC_KEY, "none": None}

    canaries: list[str] = []
    requests = 0
    for case in [*CASES, ERROR_FIELDS]:
        canary = f"CANARY{uuid.uuid4().hex}"
        canaries.append(canary)
        fields = error_fields(canary) if case is ERROR_FIELDS else behaviour_for(case, canary)
        provider.behaviour = Behaviour(**fields)
        headers = {"x-request-id": canary, "tracestate": f"vendor={canary}", "User-Agent": canary,
                   "X-Anything": canary, "traceparent": CLIENT_TRACEPARENT}
        received_before = len(provider.received)
        async with aiohttp.ClientSession(headers=headers) as s:
            for _ in range(case.calls):
                status, _body = await send(s, gw, case, canary, keys.get(case.key, f"lk-{canary}"))
                requests += 1
        assert status == case.status, f"{case.name}: {status}"
        for sent in provider.received[received_before:]:  # the headers did travel
            assert sent.headers["tracestate"] == f"vendor={canary}", case.name

    await asyncio.sleep(0.5)  # the cancelled requests' spans have ended
    spans = await finished(gw, exporter)
    roots = [s for s in spans if s.kind is SpanKind.SERVER]
    assert len(roots) == requests  # every request was traced: the proof is not vacuous
    assert sum(s.kind is SpanKind.CLIENT for s in spans) == len(provider.received)  # one per attempt
    found = [(s.name, c) for s in spans for c in canaries if c in s.to_json() or c.lower() in s.to_json()]
    assert found == []
