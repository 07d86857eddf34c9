"""The provider contract: how one wire format addresses and authenticates a call.

An adapter turns (endpoint, upstream model) into the provider's URL, adds
the provider's credentials, says which client wire formats it can serve
without translation (and which format it speaks, for the others), and
which of the client's headers the provider may see. The forwarder does
the rest, the same for all.

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

# Client headers every provider receives; every other client header stops at
# the proxy (an allow-list: a header nobody thought of never reaches a
# provider). What each one is for, and why the rest are left out:
# - content-type, accept: the body's type and the answer the client reads.
# - user-agent: the SDK and its version, which providers use to diagnose
#   SDK bugs; it names no person and no account.
# - traceparent, tracestate: W3C trace context, so a trace spans the proxy.
# Left out on purpose: credentials (replaced by the provider's), cookies,
# OpenAI-Organization / OpenAI-Project (they choose who pays: only the
# provider's config sets them), x-stainless-* (SDK telemetry about the
# client's machine: OS, runtime, retry count; a provider needs none of it
# and it is device information we do not pass on), idempotency keys (the
# provider scopes them to its account, which is ours: one client's key
# could replay another client's answer), forwarding and client-hop headers.
CLIENT_HEADERS = frozenset({"content-type", "accept", "user-agent", "traceparent", "tracestate"})
OPENAI_HEADERS = CLIENT_HEADERS | {"openai-beta"}
ANTHROPIC_HEADERS = CLIENT_HEADERS | {"anthropic-version", "anthropic-beta"}


class Adapter:
    # Client wire formats ("openai", "anthropic") this provider serves as is.
    wires: ClassVar[frozenset[str]] = frozenset()
    # The provider's own wire format: a client speaking another one is
    # served through a translation to this one (providers/translate.py).
    speaks: ClassVar[str] = "openai"
    # Whether the body's "model" field names the upstream model (Azure puts
    # the deployment in the path instead).
    model_in_body: ClassVar[bool] = True
    # Lower-case names of the client headers passed on to this provider
    # (see CLIENT_HEADERS); the forwarder tests each client header once.
    client_headers: ClassVar[frozenset[str]] = CLIENT_HEADERS

    def __init__(self, config: ProviderConfig, base_url: str | None = None) -> None:
        self.config = config
        self.base_url = (base_url or config.base_url).rstrip("/")

    def url(self, endpoint: str, upstream_model: str) -> str:
        """Where to send a call; `endpoint` is the path after /v1/."""
        return f"{self.base_url}/{endpoint}"

    def auth_headers(self) -> dict[str, str]:
        """The provider's credentials and billing scope (organisation,
        project); they replace whatever the client sent."""
        return {}

    def default_headers(self) -> dict[str, str]:
        """Headers sent only when the client sent none of that name."""
        return {}
