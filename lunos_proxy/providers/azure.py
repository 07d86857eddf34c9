"""Azure OpenAI: the deployment is in the path, `api-version` in the query,
the key in an `api-key` header. `base_url` is the resource endpoint, e.g.
https://myres.openai.azure.com; the deployment's `model` is the Azure
deployment name. The resource in the URL is the billing scope: Azure has
no organisation or project header, and the client's are never passed."""

from __future__ import annotations

from typing import ClassVar
from urllib.parse import quote

from .base import OPENAI_HEADERS, Adapter

DEFAULT_API_VERSION = "2024-10-21"


class AzureAdapter(Adapter):
    wires: ClassVar[frozenset[str]] = frozenset({"openai"})
    model_in_body: ClassVar[bool] = False
    client_headers: ClassVar[frozenset[str]] = OPENAI_HEADERS

    def url(self, endpoint: str, upstream_model: str) -> str:
        version = self.config.api_version or DEFAULT_API_VERSION
        deployment = quote(upstream_model, safe="")
        return f"{self.base_url}/openai/deployments/{deployment}/{endpoint}?api-version={version}"

    def auth_headers(self) -> dict[str, str]:
        return {"api-key": self.config.api_key} if self.config.api_key else {}
