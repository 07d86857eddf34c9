"""A translated request whose turns are not an array (`messages` a string,
an object, a number, null or missing; Anthropic's `system` neither text nor
blocks) is a 400 on that param in the client's own error shape, and never
reaches the provider: read as "no messages", it used to go out as an empty
conversation. The official SDKs send the bodies, as a client's code would."""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pytest

from tests.conftest import GatewayFactory, Running, basic_config
from tests.fakes import FakeProvider

CANARY = "canary-7e2a-shape-value"
ASK = [{"role": "user", "content": "hi"}]

WRONG: list[tuple[Any, str]] = [
    (CANARY, "Expected array, got str - at messages"),
    ({"role": "user", "content": CANARY}, "Expected array, got object - at messages"),
    (7, "Expected array, got int - at messages"),
    (None, "Expected array, got null - at messages"),
]
IDS = ["string", "object", "number", "null"]


@pytest.fixture
async def gw(provider: FakeProvider, make_gateway: GatewayFactory) -> Running:
    config = basic_config(provider.base_url)
    # Gemini is translated through its own module: never reached here.
    config["providers"]["fake-gemini"] = {
        "format": "gemini", "base_url": provider.root_url + "/v1beta", "api_key": "goog-key"
    }
    config["models"]["gemini-test"] = {"deployments": [{"provider": "fake-gemini", "model": "gem"}]}
    return await make_gateway(config)


def oai(gw: Running) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gw.v1, api_key="sk-client", max_retries=0)


def claude(gw: Running) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=gw.url, api_key="sk-client", max_retries=0)


def _no_canary(caught: pytest.ExceptionInfo[Any]) -> None:
    assert CANARY not in str(caught.value.body)
    assert CANARY not in caught.value.response.text


@pytest.mark.parametrize("model", ["claude-test", "gemini-test"])
@pytest.mark.parametrize("messages, problem", WRONG, ids=IDS)
async def test_openai_messages_not_an_array_is_a_400_on_messages(
    gw: Running, provider: FakeProvider, model: str, messages: Any, problem: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await oai(gw).chat.completions.create(model=model, messages=messages)
    assert caught.value.status_code == 400
    assert caught.value.body == {
        "message": f"Invalid request: {problem}", "type": "invalid_request_error",
        "param": "messages", "code": None,
    }
    _no_canary(caught)
    assert provider.received == []


@pytest.mark.parametrize("model", ["claude-test", "gemini-test"])
async def test_openai_messages_missing_is_a_400_on_messages(
    gw: Running, provider: FakeProvider, model: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        await oai(gw).post("/chat/completions", body={"model": model}, cast_to=object)
    assert caught.value.body == {
        "message": "Invalid request: Object missing required field messages",
        "type": "invalid_request_error", "param": "messages", "code": None,
    }
    assert provider.received == []


@pytest.mark.parametrize("model", ["gpt-test", "gemini-test"])
@pytest.mark.parametrize("messages, problem", WRONG, ids=IDS)
async def test_anthropic_messages_not_an_array_is_a_400(
    gw: Running, provider: FakeProvider, model: str, messages: Any, problem: str
) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        await claude(gw).messages.create(model=model, max_tokens=16, messages=messages)
    assert caught.value.status_code == 400
    assert caught.value.body == {"type": "error", "error": {
        "type": "invalid_request_error", "message": f"Invalid request: {problem}"}}
    _no_canary(caught)
    assert provider.received == []


@pytest.mark.parametrize("system, got", [
    (7, "int"), ({"type": "text", "text": CANARY}, "object"), (True, "bool"),
], ids=["number", "object", "bool"])
async def test_anthropic_system_neither_text_nor_blocks_is_a_400(
    gw: Running, provider: FakeProvider, system: Any, got: str
) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        await claude(gw).messages.create(model="gpt-test", max_tokens=16, messages=ASK, system=system)
    assert caught.value.body == {"type": "error", "error": {
        "type": "invalid_request_error",
        "message": f"Invalid request: Expected str | array, got {got} - at system"}}
    _no_canary(caught)
    assert provider.received == []


async def test_well_formed_turns_still_reach_the_other_format(gw: Running, provider: FakeProvider) -> None:
    """The check refuses only the wrong types: text and block `system` pass."""
    done = await oai(gw).chat.completions.create(model="claude-test", messages=ASK)  # type: ignore[arg-type]
    assert done.choices[0].message.content
    for system in ("be brief", [{"type": "text", "text": "be brief"}]):
        answer = await claude(gw).messages.create(
            model="gpt-test", max_tokens=16, messages=ASK, system=system  # type: ignore[arg-type]
        )
        assert answer.content
    assert [r.json()["messages"][0] for r in provider.received[1:]] == [
        {"role": "system", "content": "be brief"}] * 2


async def test_anthropic_messages_missing_is_a_400(gw: Running, provider: FakeProvider) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        await claude(gw).post("/v1/messages", body={"model": "gpt-test", "max_tokens": 16}, cast_to=object)
    assert caught.value.body == {"type": "error", "error": {
        "type": "invalid_request_error", "message": "Invalid request: Object missing required field messages"}}
    assert provider.received == []
