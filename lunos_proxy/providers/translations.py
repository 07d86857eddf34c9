"""Which translation joins a client format to a provider format (`translation_for`).

The registry of the concrete translations (anthropic_openai.py,
openai_anthropic.py, openai_gemini.py); translate.py holds what they share,
so that it imports none of them.
"""

from __future__ import annotations

from typing import Any

from .anthropic_openai import AnthropicToOpenAI
from .openai_anthropic import OpenAIToAnthropic
from .openai_gemini import CountTokensToGemini, OpenAIToGemini
from .translate import TRANSLATED_ENDPOINTS, Chain, EventTranslator, Translation

__all__ = ["Chained", "translation_for"]


def translation_for(client: str, provider: str, endpoint: str) -> Translation | None:
    """How a `client`-format request to `endpoint` reaches a `provider`-format
    API, or None when it cannot (the endpoint has no counterpart there)."""
    if endpoint not in TRANSLATED_ENDPOINTS.get(client, ()):
        return None
    if endpoint == "messages/count_tokens":
        # OpenAI has no token-counting endpoint: only Gemini's countTokens.
        return CountTokensToGemini() if provider == "gemini" else None

    if client == "openai":
        if provider == "anthropic":
            return OpenAIToAnthropic()
        if provider == "gemini":
            return OpenAIToGemini()
    elif client == "anthropic":
        if provider == "openai":
            return AnthropicToOpenAI()
        if provider == "gemini":
            return Chained(AnthropicToOpenAI(), OpenAIToGemini())
    return None


class Chained:
    """A client format reaching a provider through OpenAI Chat Completions."""

    def __init__(self, outer: Translation, inner: Translation) -> None:
        self.outer, self.inner = outer, inner
        self.provider = inner.provider

    def request(self, body: dict[str, Any], model: str) -> tuple[str, dict[str, Any]]:
        _, middle = self.outer.request(body, model)
        return self.inner.request(middle, model)

    def response(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.outer.response(self.inner.response(body))

    def stream(self) -> EventTranslator:
        return Chain(self.inner.stream(), self.outer.stream())
