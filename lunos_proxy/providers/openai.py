"""OpenAI and every OpenAI-compatible API (Groq, Together, Mistral, xAI, vLLM,
Ollama): base URL ending in /v1 plus a bearer key, and the organisation and
project the provider's config names (never the client's: they choose which
of the provider's accounts pays)."""

from __future__ import annotations

from typing import ClassVar

from .base import OPENAI_HEADERS, Adapter


class OpenAIAdapter(Adapter):
    wires: ClassVar[frozenset[str]] = frozenset({"openai"})
    client_headers: ClassVar[frozenset[str]] = OPENAI_HEADERS

    def auth_headers(self) -> dict[str, str]:
        c = self.config
        headers: dict[str, str] = {}
        if c.api_key:  # local servers (vLLM, Ollama) often need none
            headers["Authorization"] = f"Bearer {c.api_key}"
        if c.organization:
            headers["OpenAI-Organization"] = c.organization
        if c.project:
            headers["OpenAI-Project"] = c.project
        return headers
