"""The provider contract: how one wire format addresses and authenticates a call.

An adapter turns (endpoint, upstream model) into the provider's URL, adds
the provider's credentials, and says which client wire formats it can
serve without translation. The forwarder does the rest, the same for all.

    class Acme(Adapter):
        wires = frozenset({"openai"})

        def url(self, endpoint: str, upstream_model: str) -> str:
            return f"{self.base_url}/{endpoint}"

        def auth_headers(self) -> dict[str, str]:
            return {"Authorization": f"Bearer {self.config.api_key}"}

and add it to `ADAPTERS` in `providers/__init__.py` under its `format` name.
"""

from __future__ import annotations

from typing import ClassVar

from ..config import ProviderConfig


class Adapter:
    # Client wire formats ("openai", "anthropic") this provider serves as is.
    wires: ClassVar[frozenset[str]] = frozenset()
    # Whether the body's "model" field names the upstream model (Azure puts
    # the deployment in the path instead).
    model_in_body: ClassVar[bool] = True

    def __init__(self, config: ProviderConfig, base_url: str | None = None) -> None:
        self.config = config
        self.base_url = (base_url or config.base_url).rstrip("/")

    def url(self, endpoint: str, upstream_model: str) -> str:
        """Where to send a call; `endpoint` is the path after /v1/."""
        return f"{self.base_url}/{endpoint}"

    def auth_headers(self) -> dict[str, str]:
        """The provider's credentials; they replace whatever the client sent."""
        return {}

    def default_headers(self) -> dict[str, str]:
        """Headers sent only when the client sent none of that name."""
        return {}
