"""OpenAI and every OpenAI-compatible API (Groq, Together, Mistral, xAI, vLLM,
Ollama): base URL ending in /v1 plus a bearer key."""

from __future__ import annotations

from typing import ClassVar

from .base import Adapter


class OpenAIAdapter(Adapter):
    wires: ClassVar[frozenset[str]] = frozenset({"openai"})

    def auth_headers(self) -> dict[str, str]:
        if not self.config.api_key:
            return {}  # local servers (vLLM, Ollama) often need none
        return {"Authorization": f"Bearer {self.config.api_key}"}
