"""The official SDKs do not notice a failover: OpenAI streaming, Anthropic messages."""

from __future__ import annotations

import anthropic
import openai

from tests.conftest import GatewayFactory
from tests.fakes import CHUNKS
from tests.plugins.router.conftest import ProviderFactory, deployment, router_config


async def test_openai_sdk_stream_survives_a_failing_deployment(fakes: ProviderFactory, make_gateway: GatewayFactory) -> None:
    a, b = await fakes(2)
    a.behaviour.status = 502
    gw = await make_gateway(router_config(
        {"a": a, "b": b}, {"gpt": {"strategy": "priority", "deployments": [deployment("a"), deployment("b")]}}))
    client = openai.AsyncOpenAI(base_url=gw.url + "/v1", api_key="lk-test", max_retries=0)
    stream = await client.chat.completions.create(
        model="gpt", stream=True, messages=[{"role": "user", "content": "hi"}])
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "".join(CHUNKS)
    assert (len(a.received), len(b.received)) == (1, 1)


async def test_anthropic_sdk_is_served_by_a_fallback_model(fakes: ProviderFactory, make_gateway: GatewayFactory) -> None:
    a, b = await fakes(2)
    a.behaviour.status = 529
    config = router_config({}, {
        "sonnet": {"fallbacks": ["haiku"], "deployments": [deployment("ant-a", "claude-sonnet")]},
        "haiku": {"deployments": [deployment("ant-b", "claude-haiku")]},
    })
    config["providers"] = {
        "ant-a": {"format": "anthropic", "base_url": a.root_url, "api_key": "sk-ant-a"},
        "ant-b": {"format": "anthropic", "base_url": b.root_url, "api_key": "sk-ant-b"},
    }
    gw = await make_gateway(config)
    client = anthropic.AsyncAnthropic(base_url=gw.url, api_key="lk-test", max_retries=0)
    msg = await client.messages.create(
        model="sonnet", max_tokens=50, messages=[{"role": "user", "content": "hi"}])
    assert msg.content[0].text == "".join(CHUNKS)  # type: ignore[union-attr]
    assert [r.json()["model"] for r in b.received] == ["claude-haiku"]
    assert b.received[0].headers["x-api-key"] == "sk-ant-b"
    assert len(a.received) == 1
