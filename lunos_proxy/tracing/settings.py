"""The ``tracing:`` section of the YAML (off unless enabled).

    tracing:
      enabled: true
      endpoint: http://otel-collector:4318   # OTLP over HTTP; /v1/traces is added
      service_name: lunos-proxy
      sample_ratio: 0.1          # of new traces (a client's traceparent decides its own)
      headers: {authorization: "Bearer ${OTEL_TOKEN}"}
"""

from __future__ import annotations

import re

import msgspec

from ..bounds import AtLeastOne, Fraction, Seconds

__all__ = ["TracingConfig"]

_HTTP_URL = re.compile(r"https?://[^/\s:?#]+(:\d{1,5})?(/[^\s?#]*)?")
# RFC 9110 token characters: what an HTTP header name may be.
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_SERVICE_NAME = re.compile(r"[A-Za-z0-9._:/-]{1,100}")


class TracingConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    enabled: bool = False
    # The OTLP/HTTP collector's base URL, as OTEL_EXPORTER_OTLP_ENDPOINT:
    # spans are POSTed (protobuf) to its /v1/traces.
    endpoint: str = "http://127.0.0.1:4318"
    service_name: str = "lunos-proxy"
    # Share of new traces recorded. A request whose traceparent says its
    # caller records the trace is recorded too, and one whose caller does
    # not is not (the W3C sampled flag is honoured, as OpenTelemetry's
    # parent-based sampler does).
    sample_ratio: Fraction = 1.0
    # Sent with every export (a collector's credentials, a tenant id).
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    # One export's limit; exports run on their own thread, never on the loop.
    export_timeout_seconds: Seconds = 10.0
    # Spans waiting for export; past this, new spans are dropped, not queued.
    max_queue_size: AtLeastOne = 2048

    def problems(self) -> list[str]:
        """What is wrong with the section, as ``tracing.FIELD: what`` lines."""
        out: list[str] = []
        if _HTTP_URL.fullmatch(self.endpoint) is None:
            out.append("tracing.endpoint: expected an http(s) URL such as http://collector:4318")
        if _SERVICE_NAME.fullmatch(self.service_name) is None:
            out.append("tracing.service_name: expected 1 to 100 letters, digits or ._:/-")
        for name in self.headers:
            if _HEADER_NAME.fullmatch(name) is None:
                out.append(f"tracing.headers: {name!r} is not an HTTP header name")
        return out

    @property
    def traces_url(self) -> str:
        return self.endpoint.rstrip("/") + "/v1/traces"
