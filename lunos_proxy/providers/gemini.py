"""Google Gemini's generateContent API: the model and the method are in the
path, the key in `x-goog-api-key`. `base_url` is the API root with its
version, e.g. https://generativelanguage.googleapis.com/v1beta; the
deployment's `model` is Gemini's model name (gemini-2.5-flash). No client
speaks Gemini's format: every call is translated (providers/openai_gemini.py)."""

from __future__ import annotations

from typing import ClassVar
from urllib.parse import quote

from .base import CLIENT_HEADERS, Adapter

STREAM = "streamGenerateContent"


class GeminiAdapter(Adapter):
    wires: ClassVar[frozenset[str]] = frozenset()
    speaks: ClassVar[str] = "gemini"
    model_in_body: ClassVar[bool] = False
    client_headers: ClassVar[frozenset[str]] = CLIENT_HEADERS

    def url(self, endpoint: str, upstream_model: str) -> str:
        """`endpoint` is the method: generateContent or streamGenerateContent
        (asked for as server-sent events)."""
        model = quote(upstream_model, safe="")
        query = "?alt=sse" if endpoint == STREAM else ""
        return f"{self.base_url}/models/{model}:{endpoint}{query}"

    def auth_headers(self) -> dict[str, str]:
        return {"x-goog-api-key": self.config.api_key} if self.config.api_key else {}
