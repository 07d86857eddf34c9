"""`RecordWriter` writes the line structlog's chain would, without the chain."""

from __future__ import annotations

import datetime
import io
import re
import time

import msgspec
import pytest
import structlog
from structlog.testing import capture_logs

from lunos_proxy import logs
from lunos_proxy.logs import RecordWriter, configure_logging
from plugins.logger import RequestRecord

RECORD = RequestRecord(request_id="req_1", account_id="acct", endpoint="chat/completions",
                       stream=True, status=200, deployments_tried=["a/b"], duration_ms=1.25,
                       upstream_ms=None, input_tokens=9, client_addr="192.0.2.0/24")
STAMP = re.compile(rb'"timestamp":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z"')


def _stream() -> tuple[io.TextIOWrapper, io.BytesIO]:
    raw = io.BytesIO()
    return io.TextIOWrapper(raw, encoding="utf-8", write_through=True), raw


def _lines(raw: io.BytesIO) -> list[bytes]:
    return [STAMP.sub(b'"timestamp":"T"', line) for line in raw.getvalue().splitlines()]


def test_a_record_is_written_as_the_processor_chain_writes_it() -> None:
    out, raw = _stream()
    configure_logging("info", "json", out)
    log = structlog.get_logger("lunos.request").bind()
    lines = RecordWriter(log)
    assert lines._stream is not None  # the direct path is the one under test
    structlog.contextvars.bind_contextvars(worker=3)
    try:
        for level in ("info", "warning", "error"):
            getattr(log, level)("request", **msgspec.to_builtins(RECORD))
            lines.log_record("request", level, RECORD)
        lines.log_record("request", "info", RequestRecord())  # every field at its default
        log.info("request", **msgspec.to_builtins(RequestRecord()))
        lines.log_record("request", "debug", RECORD)  # below the level: not written
    finally:
        structlog.contextvars.clear_contextvars()
        structlog.reset_defaults()
    written = _lines(raw)
    assert len(written) == 8
    assert [written[i] for i in (0, 2, 4, 6)] == [written[i] for i in (1, 3, 5, 7)]
    assert written[0] == (
        b'{"request_id":"req_1","account_id":"acct","endpoint":"chat/completions","stream":true,'
        b'"status":200,"deployments_tried":["a/b"],"duration_ms":1.25,"input_tokens":9,'
        b'"client_addr":"192.0.2.0/24","event":"request","worker":3,"level":"info",'
        b'"timestamp":"T"}'
    )


def test_lines_go_through_structlog_when_its_processors_were_changed() -> None:
    out, raw = _stream()
    configure_logging("info", "json", out)
    lines = RecordWriter(structlog.get_logger("lunos.request").bind())
    try:
        with capture_logs() as captured:
            lines.log_record("request", "info", RECORD)
    finally:
        structlog.reset_defaults()
    assert raw.getvalue() == b""
    assert captured == [{**msgspec.to_builtins(RECORD), "event": "request", "log_level": "info"}]


def test_the_timestamp_reads_as_structlogs(monkeypatch: pytest.MonkeyPatch) -> None:
    for now in (1_796_648_327.0, 1_796_648_327.25, 1_796_648_328.000123):
        monkeypatch.setattr(time, "time", lambda now=now: now)
        iso = datetime.datetime.fromtimestamp(now, datetime.UTC).isoformat()
        assert logs._timestamp() == iso.replace("+00:00", "Z").encode()
