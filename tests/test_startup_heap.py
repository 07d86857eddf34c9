"""serve() keeps the cycle collector off the startup heap."""

from __future__ import annotations

import gc

from lunos_proxy.cli import freeze_startup_heap


def test_the_startup_heap_is_frozen_and_later_garbage_is_still_collected() -> None:
    gc.unfreeze()
    try:
        freeze_startup_heap()
        assert gc.get_freeze_count() > 10_000  # modules, classes, config: all of startup

        class Cycle:
            pass

        a, b = Cycle(), Cycle()
        a.other, b.other = b, a  # type: ignore[attr-defined]
        del a, b
        assert gc.collect() >= 2  # made after the freeze: still found and freed
    finally:
        gc.unfreeze()
