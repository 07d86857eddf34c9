"""Anthropic's Messages API: `x-api-key`, and an `anthropic-version` default."""

from __future__ import annotations

from typing import ClassVar

from .base import ANTHROPIC_HEADERS, Adapter

DEFAULT_VERSION = "2023-06-01"


class AnthropicAdapter(Adapter):
    wires: ClassVar[frozenset[str]] = frozenset({"anthropic"})
    speaks: ClassVar[str] = "anthropic"
    client_headers: ClassVar[frozenset[str]] = ANTHROPIC_HEADERS

    def auth_headers(self) -> dict[str, str]:
        return {"x-api-key": self.config.api_key} if self.config.api_key else {}

    def default_headers(self) -> dict[str, str]:
        return {"anthropic-version": self.config.api_version or DEFAULT_VERSION}
