"""A provider answer past the size bound ends in the gateway's 502 for a
broken answer, in the client's SDK shape and without the provider's bytes:
refused at once when its length says so, and once past the bound when it
never ends; the connection is closed, and the next request is served."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import anthropic
import openai
import pytest

from lunos_proxy import forward
from tests.conftest import GatewayFactory, Running, basic_config

MESSAGES: list[Any] = [{"role": "user", "content": "hi"}]
BOUND = 200_000  # forward._MAX_ANSWER made small: the client's max_body
CANARY = b"oversize-canary"
CHAT = (b'{"id":"c1","object":"chat.completion","created":0,"model":"gpt-upstream","choices":'
        b'[{"index":0,"message":{"role":"assistant","content":"fine"},"finish_reason":"stop"}],'
        b'"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}')
MESSAGE = (b'{"id":"m1","type":"message","role":"assistant","model":"claude-upstream",'
           b'"content":[{"type":"text","text":"fine"}],"stop_reason":"end_turn",'
           b'"usage":{"input_tokens":1,"output_tokens":1}}')


class Oversized:
    """A provider answering its first request with a body past the bound
    (`mode`), each later one with a good answer; it records how each
    connection ended and how many body bytes it sent."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.connections = 0
        self.requests = 0
        self.sent = 0
        self.closed_by_peer = asyncio.Event()
        self.server: asyncio.Server | None = None
        self.url = ""

    async def start(self) -> Oversized:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                self.requests += 1
                if self.requests > 1:
                    body = MESSAGE if b"/messages" in head.split(b"\r\n")[0] else CHAT
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                                 b"content-length: %d\r\n\r\n%s" % (len(body), body))
                    continue
                if self.mode == "announced":
                    # Ten gigabytes announced; a first piece sent, the rest never.
                    writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                                 b"content-length: 10000000000\r\n\r\n{\"x\": \"" + CANARY)
                    self.sent = 7 + len(CANARY)
                    await reader.read()  # until the gateway closes the connection
                    self.closed_by_peer.set()
                    return
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                             b"transfer-encoding: chunked\r\n\r\n")
                piece = CANARY + b"x" * (16384 - len(CANARY))
                chunk = b"%x\r\n%s\r\n" % (len(piece), piece)
                while True:  # never the last chunk
                    writer.write(chunk)
                    await writer.drain()
                    self.sent += len(piece)
        except (ConnectionError, asyncio.IncompleteReadError):
            self.closed_by_peer.set()
        finally:
            writer.close()


@pytest.fixture
async def gateway(
    make_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[Running, Oversized]]:
    monkeypatch.setattr(forward, "_MAX_ANSWER", BOUND)
    provider = await Oversized(request.param).start()
    gw = await make_gateway(basic_config(provider.url + "/v1"))
    yield gw, provider
    assert provider.server is not None
    provider.server.close()


@pytest.mark.parametrize("gateway", ["announced", "endless"], indirect=True)
async def test_an_answer_past_the_bound_is_a_502_in_the_openai_shape_and_the_next_is_served(
    gateway: tuple[Running, Oversized],
) -> None:
    gw, provider = gateway
    async with openai.AsyncOpenAI(base_url=gw.v1, api_key="lk-client-key", max_retries=0,
                                  timeout=10) as client:
        with pytest.raises(openai.InternalServerError) as e:
            await client.chat.completions.create(model="gpt-test", messages=MESSAGES)
        assert e.value.status_code == 502
        assert e.value.body == {"message": "The provider sent a malformed answer.",
                                "type": "server_error", "param": None, "code": "upstream_invalid"}
        assert CANARY.decode() not in e.value.response.text
        await asyncio.wait_for(provider.closed_by_peer.wait(), 5)
        answer = await client.chat.completions.create(model="gpt-test", messages=MESSAGES)
    assert answer.choices[0].message.content == "fine"
    assert (provider.requests, provider.connections) == (2, 2)  # the first one not kept
    if provider.mode == "announced":
        assert provider.sent == 22
    else:  # read up to the bound; what the sockets' buffers hold is all that was sent on
        assert BOUND < provider.sent < BOUND + 32 * 1024 * 1024


@pytest.mark.parametrize("gateway", ["announced", "endless"], indirect=True)
async def test_an_answer_past_the_bound_is_a_502_in_the_anthropic_shape_and_the_next_is_served(
    gateway: tuple[Running, Oversized],
) -> None:
    gw, provider = gateway
    async with anthropic.AsyncAnthropic(base_url=gw.url, api_key="lk-client-key", max_retries=0,
                                        timeout=10) as client:
        with pytest.raises(anthropic.InternalServerError) as e:
            await client.messages.create(model="claude-test", max_tokens=64, messages=MESSAGES)
        assert e.value.status_code == 502
        assert e.value.body == {"type": "error", "error": {
            "type": "api_error", "message": "The provider sent a malformed answer."}}
        assert CANARY.decode() not in e.value.response.text
        await asyncio.wait_for(provider.closed_by_peer.wait(), 5)
        answer = await client.messages.create(model="claude-test", max_tokens=64, messages=MESSAGES)
    assert answer.content[0].text == "fine"  # type: ignore[union-attr]
    assert (provider.requests, provider.connections) == (2, 2)
