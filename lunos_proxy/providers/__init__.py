"""Provider adapters by wire `format` name (the `format` key of a provider)."""

from __future__ import annotations

from .anthropic import AnthropicAdapter
from .azure import AzureAdapter
from .base import ANTHROPIC_HEADERS, OPENAI_HEADERS, Adapter
from .gemini import GeminiAdapter
from .openai import OpenAIAdapter


class DemoAdapter(Adapter):
    """The built-in demo provider speaks both formats on one loopback port."""

    wires = frozenset({"openai", "anthropic"})
    client_headers = OPENAI_HEADERS | ANTHROPIC_HEADERS


ADAPTERS: dict[str, type[Adapter]] = {
    "openai": OpenAIAdapter,
    "anthropic": AnthropicAdapter,
    "azure": AzureAdapter,
    "gemini": GeminiAdapter,
    "demo": DemoAdapter,
}

__all__ = ["ADAPTERS", "Adapter"]
