"""serve() keeps the cycle collector off the startup heap."""

from __future__ import annotations

import gc

from lunos_proxy.cli import YOUNG_OBJECTS, freeze_startup_heap


def test_the_startup_heap_is_frozen_and_later_garbage_is_still_collected() -> None:
    gc.unfreeze()
    threshold = gc.get_threshold()
    try:
        freeze_startup_heap()
        assert gc.get_freeze_count() > 10_000  # modules, classes, config: all of startup
        assert gc.get_threshold() == (YOUNG_OBJECTS, *threshold[1:])

        class Cycle:
            pass

        a, b = Cycle(), Cycle()
        a.other, b.other = b, a  # type: ignore[attr-defined]
        del a, b
        assert gc.collect() >= 2  # made after the freeze: still found and freed
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


def test_cycles_are_collected_without_being_asked_for() -> None:
    threshold = gc.get_threshold()
    gc.collect()
    try:
        freeze_startup_heap()
        collected: list[int] = []

        def seen(phase: str, info: dict[str, int]) -> None:
            if phase == "stop":
                collected.append(info["collected"])

        gc.callbacks.append(seen)
        try:
            for _ in range(YOUNG_OBJECTS):  # cycles only: each outlives its last name
                a: dict[str, object] = {}
                a["self"] = a
        finally:
            gc.callbacks.remove(seen)
        assert sum(collected) >= YOUNG_OBJECTS // 2  # the young generation filled and was swept
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
