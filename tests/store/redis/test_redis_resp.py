"""Commands the lanes send, encoded in Python: the bytes hiredis would send."""

from __future__ import annotations

import hiredis

from lunos_proxy.store.redis.resp import ScriptCall, arg, command, data, number


def test_a_command_is_encoded_as_hiredis_encodes_it() -> None:
    args = ("EVALSHA", "ünïcode-key", b"\x00raw\r\n", 0, -7, 10**12, 1.0, 0.1, 60.0, 1e20, 2.5e-7)
    assert command(*args) == hiredis.pack_command(args)
    assert command("PING") == b"*1\r\n$4\r\nPING\r\n"


def test_arguments_encoded_alone_join_into_a_command() -> None:
    parts = [arg("SET"), arg("k"), data(b"v"), number(3)]
    assert b"*4\r\n" + b"".join(parts) == hiredis.pack_command(("SET", "k", b"v", 3))


def test_a_script_call_runs_by_sha_or_by_source() -> None:
    keys = arg("lunos:{a}:limits") + arg("lunos:{a}:slots:k:conc")
    call = ScriptCall("lunos:{a}:limits", 2, keys, 2, arg("lease-1") + number(1.5))
    expected = ("lunos:{a}:limits", "lunos:{a}:slots:k:conc", "lease-1", 1.5)
    assert call.key == "lunos:{a}:limits"
    assert call.evalsha(data(b"0" * 40)) == hiredis.pack_command(
        ("EVALSHA", "0" * 40, 2, *expected)
    )
    assert call.eval(data(b"return 1")) == hiredis.pack_command(("EVAL", "return 1", 2, *expected))
