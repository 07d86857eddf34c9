"""The tokenizer process: counts tokens for one serving process over a pipe.

Run as a script (``python -I tokenizer_process.py SITE_DIR``, SITE_DIR being
where the tokenizer package is installed): it imports nothing of Lunos, so
that it starts with only the tokenizer's tables in memory (the serving
process imports this module for its constants alone). `estimate.py` starts
it at the first count a serving process needs and speaks to it on its
standard input and output:

    request:  encoding id (1 byte: 0 o200k_base, 1 cl100k_base),
              text length (4 bytes, big-endian), the text (UTF-8, a lone
              surrogate written as its three bytes: "surrogatepass")
    answer:   the token count (8 bytes, big-endian, signed); -1 when the
              tokenizer refused the text

It exits when its input ends (its serving process stopped or died). The
text is only counted: nothing is written anywhere, its standard error goes
nowhere, so that no failure can print a piece of it, and it leaves no core
file (which would hold the texts in its memory).

It runs `NICENESS` steps below its serving process's priority: its work
(the tables' load, about a second of CPU, and each count) is never worth
a pause of the requests its serving process is answering on the same core.
A count a request waits for still gets the core whenever the server is not
busy, and its share of it when it is.
"""

from __future__ import annotations

import os
import resource
import signal
import struct
import sys
import warnings
from typing import Any

ENCODINGS = ("o200k_base", "cl100k_base")
REQUEST = struct.Struct(">BI")
ANSWER = struct.Struct(">q")
NICENESS = 10


def _read(stream: Any, size: int) -> bytes | None:
    data = stream.read(size)
    return data if len(data) == size else None


def main() -> None:
    # Its own session already keeps a terminal's Ctrl-C away; this is for a
    # signal sent to the whole process group by hand.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    try:
        os.nice(NICENESS)
    except OSError:
        pass  # a platform without it: counts at the server's priority
    if len(sys.argv) > 1 and sys.argv[1]:
        sys.path.insert(0, sys.argv[1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import bpe_openai
    tables: dict[int, Any] = {}
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    while True:
        head = _read(source, REQUEST.size)
        if head is None:
            return
        which, size = REQUEST.unpack(head)
        data = _read(source, size) if size else b""
        if data is None:
            return
        try:
            if which not in tables:
                tables[which] = bpe_openai.get_encoding(ENCODINGS[which])
            text = data.decode("utf-8", "surrogatepass")
            count = len(tables[which].encode_ordinary(text))
        except Exception:
            count = -1
        sink.write(ANSWER.pack(count))
        sink.flush()


if __name__ == "__main__":
    main()
