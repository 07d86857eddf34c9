"""Commands for the lanes, encoded (RESP) here rather than by hiredis.

hiredis's `pack_command` spends about a thousand instructions on each
argument (an sds string each, repr() of a number), and a limit call has
tens of them. Most are the same for every request of a kind (the encoded
limits, the keys of a tag): the store encodes those once, keeps the bytes,
and joins them with the few made per call.

    keys = arg("lunos:{acct:a}:limits") + arg("lunos:{acct:a}:slots:k:conc")
    call = ScriptCall("lunos:{acct:a}:limits", 2, keys, 1, arg(lease))
    reply = await lane.call(call.evalsha(script.sha_arg))

An argument is text (UTF-8), bytes, or a number written as `repr` writes
it, as hiredis does (Lua's tonumber reads a float's shortest form back
exactly).
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["ScriptCall", "any_arg", "arg", "command", "data", "number", "script_call"]


def data(value: bytes) -> bytes:
    """One argument: `value` as it is."""
    return b"$%d\r\n%b\r\n" % (len(value), value)


def arg(value: str) -> bytes:
    """One argument: `value` in UTF-8."""
    encoded = value.encode()
    return b"$%d\r\n%b\r\n" % (len(encoded), encoded)


def number(value: float) -> bytes:
    """One argument: `value` written as Python (and hiredis) writes it."""
    text = repr(value).encode()
    return b"$%d\r\n%b\r\n" % (len(text), text)


def any_arg(value: str | bytes | float) -> bytes:
    """One argument of any of the three kinds."""
    if isinstance(value, str):
        return arg(value)
    if isinstance(value, bytes):
        return data(value)
    return number(value)


def command(*args: str | bytes | float) -> bytes:
    """A whole command of any arguments (one not on the hot path)."""
    return b"*%d\r\n%b" % (len(args), b"".join(map(any_arg, args)))


def script_call(keys: Sequence[str], args: Sequence[str | bytes | float]) -> ScriptCall:
    """A script call of any keys and arguments (one not on the hot path)."""
    return ScriptCall(
        keys[0], len(keys), b"".join(map(arg, keys)), len(args), b"".join(map(any_arg, args))
    )


class ScriptCall:
    """A script's KEYS and ARGV, encoded: what follows EVALSHA <sha> (or
    EVAL <source>, where the server lacks the script). `key` is the first
    key: the one whose Cluster slot says where the call runs."""

    __slots__ = ("_body", "_count", "key")

    def __init__(self, key: str, nkeys: int, keys: bytes, nargs: int, args: bytes) -> None:
        self.key = key
        self._count = 3 + nkeys + nargs  # the command, the script, numkeys, KEYS, ARGV
        self._body = b"%b%b%b" % (number(nkeys), keys, args)

    def evalsha(self, sha: bytes) -> bytes:
        """The command that runs it by `sha` (`data(sha)`)."""
        return b"*%d\r\n$7\r\nEVALSHA\r\n%b%b" % (self._count, sha, self._body)

    def eval(self, source: bytes) -> bytes:
        """The command that runs it by `source` (`data(source)`)."""
        return b"*%d\r\n$4\r\nEVAL\r\n%b%b" % (self._count, source, self._body)
