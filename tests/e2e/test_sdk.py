"""The official SDKs, pointed at Lunos, must not notice the proxy."""

from __future__ import annotations

import anthropic
import openai
import pytest

from tests.conftest import Running
from tests.fakes import CHUNKS, COMPLETION_TOKENS, PROMPT_TOKENS, FakeProvider

TEXT = "".join(CHUNKS)


def oai(gw: Running, key: str = "lk-client-key") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gw.v1, api_key=key, max_retries=0)


def ant(gw: Running, key: str = "lk-client-key") -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=gw.url, api_key=key, max_retries=0)


async def test_openai_chat_completion_round_trip(gw: Running, provider: FakeProvider) -> None:
    async with oai(gw) as client:
        result = await client.chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "hi"}]
        )
    assert result.choices[0].message.content == TEXT
    assert result.usage is not None
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (PROMPT_TOKENS, COMPLETION_TOKENS)
    [sent] = provider.received
    assert sent.path == "/v1/chat/completions"
    assert sent.json()["model"] == "gpt-upstream"  # public name mapped to the provider's
    assert sent.json()["messages"] == [{"role": "user", "content": "hi"}]


async def test_openai_chat_stream_round_trip(gw: Running) -> None:
    async with oai(gw) as client:
        stream = await client.chat.completions.create(
            model="gpt-test", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        pieces = [c.choices[0].delta.content async for c in stream if c.choices and c.choices[0].delta.content]
    assert pieces == CHUNKS


async def test_alias_resolves_to_its_model(gw: Running, provider: FakeProvider) -> None:
    async with oai(gw) as client:
        await client.chat.completions.create(model="gpt-alias", messages=[{"role": "user", "content": "x"}])
    assert provider.received[0].json()["model"] == "gpt-upstream"


async def test_body_is_forwarded_byte_for_byte_when_model_names_match(
    gw: Running, provider: FakeProvider
) -> None:
    import aiohttp

    raw = b'{ "model" : "gpt-same",  "messages":[{"role":"user","content":"caf\\u00e9"}], "n":1 }'
    async with aiohttp.ClientSession() as s:
        async with s.post(gw.v1 + "/chat/completions", data=raw,
                          headers={"Content-Type": "application/json"}) as r:
            assert r.status == 200
    assert provider.received[0].body == raw


async def test_openai_completions_embeddings_and_responses(gw: Running, provider: FakeProvider) -> None:
    async with oai(gw) as client:
        comp = await client.completions.create(model="gpt-test", prompt="say hi")
        emb = await client.embeddings.create(model="gpt-test", input="hi")
    assert comp.choices[0].text == TEXT
    assert emb.data[0].embedding == [0.5, 0.25]
    assert [r.path for r in provider.received] == ["/v1/completions", "/v1/embeddings"]


async def test_models_lists_configured_public_models(gw: Running) -> None:
    async with oai(gw) as client:
        page = await client.models.list()
    assert sorted(m.id for m in page.data) == ["claude-test", "gpt-same", "gpt-test"]


async def test_anthropic_message_round_trip(gw: Running, provider: FakeProvider) -> None:
    async with ant(gw) as client:
        msg = await client.messages.create(
            model="claude-test", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        )
        sdk_version = client.default_headers["anthropic-version"]
    assert msg.content[0].type == "text" and msg.content[0].text == TEXT
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (PROMPT_TOKENS, COMPLETION_TOKENS)
    [sent] = provider.received
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == "sk-ant-provider-secret"
    assert sent.headers["anthropic-version"] == sdk_version  # the SDK's own, passed on
    assert sent.json()["model"] == "claude-upstream"


async def test_anthropic_stream_round_trip(gw: Running) -> None:
    async with ant(gw) as client:
        async with client.messages.stream(
            model="claude-test", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            pieces = [t async for t in stream.text_stream]
            final = await stream.get_final_message()
    assert pieces == CHUNKS
    assert final.usage.output_tokens == COMPLETION_TOKENS


async def test_anthropic_count_tokens(gw: Running, provider: FakeProvider) -> None:
    async with ant(gw) as client:
        counted = await client.messages.count_tokens(
            model="claude-test", messages=[{"role": "user", "content": "hi"}]
        )
    assert counted.input_tokens == PROMPT_TOKENS
    assert provider.received[0].path == "/v1/messages/count_tokens"


async def test_request_id_is_returned_and_kept_when_sent(gw: Running) -> None:
    import aiohttp

    body = {"model": "gpt-test", "messages": []}
    async with aiohttp.ClientSession() as s:
        async with s.post(gw.v1 + "/chat/completions", json=body) as r:
            made = r.headers["x-request-id"]
        async with s.post(gw.v1 + "/chat/completions", json=body,
                          headers={"x-request-id": "trace-42"}) as r:
            kept = r.headers["x-request-id"]
        async with s.post(gw.v1 + "/chat/completions", json=body,
                          headers={"x-request-id": "bad value\twith tab"}) as r:
            replaced = r.headers["x-request-id"]
    assert made.startswith("req_") and len(made) == 28
    assert kept == "trace-42"
    assert replaced.startswith("req_")


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
async def test_error_statuses_reach_sdk_as_its_own_exceptions(gw: Running, path: str) -> None:
    if path == "/v1/messages":
        async with ant(gw) as client:
            with pytest.raises(anthropic.NotFoundError) as e:
                await client.messages.create(model="nope", max_tokens=5, messages=[])
        assert e.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    else:
        async with oai(gw) as client:
            with pytest.raises(openai.NotFoundError) as e2:
                await client.chat.completions.create(model="nope", messages=[])
        assert e2.value.code == "model_not_found"
