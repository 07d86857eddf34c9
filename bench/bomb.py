"""A gzip bomb: a few MB that inflate to GiBs (for the hostile bench load and the tests).

Standalone (stdlib only), so the tests import it as `bench.bomb`.
"""

from __future__ import annotations

import zlib

MIB = 1024 * 1024


def gzip_bomb(gib: int = 2) -> bytes:
    """A valid gzip stream of `gib` GiB of zeros, about 1 MB per GiB."""
    zeros = bytes(MIB)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    # After a full flush a block refers to nothing before it, so the block
    # for one MiB of zeros can be repeated.
    block = deflate.compress(zeros) + deflate.flush(zlib.Z_FULL_FLUSH)
    count = gib * 1024
    crc = 0
    for _ in range(count):
        crc = zlib.crc32(zeros, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    trailer = crc.to_bytes(4, "little") + (count * MIB % 2**32).to_bytes(4, "little")
    return header + block * count + deflate.flush(zlib.Z_FINISH) + trailer
