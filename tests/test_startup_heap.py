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


def test_a_busy_thread_hands_the_interpreter_back_to_the_loop_quickly() -> None:
    """A thread running Python keeps the loop waiting for the lock one
    switch interval at a time: at Python's 5 ms the loop stops for about
    that long every time the thread takes the lock; `serve` makes it half
    a millisecond. Counted: the loop's stops of over 2 ms in 0.4 s."""
    import asyncio
    import sys
    import threading
    import time

    from lunos_proxy.cli import SWITCH_INTERVAL, hand_back_quickly

    def turns_of_the_loop() -> list[float]:
        stop = threading.Event()

        def busy() -> None:
            n = 0
            while not stop.is_set():
                n += 1

        async def measure() -> list[float]:
            gaps: list[float] = []
            last = start = time.perf_counter()
            while last - start < 0.4:
                await asyncio.sleep(0)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now
            return gaps

        worker = threading.Thread(target=busy)
        worker.start()
        try:
            return asyncio.run(measure())
        finally:
            stop.set()
            worker.join()

    default = sys.getswitchinterval()
    try:
        hand_back_quickly()
        assert sys.getswitchinterval() == SWITCH_INTERVAL
        quick = sum(gap > 0.002 for gap in turns_of_the_loop())
        sys.setswitchinterval(0.005)
        slow = sum(gap > 0.002 for gap in turns_of_the_loop())
    finally:
        sys.setswitchinterval(default)
    assert slow >= 20  # a stop of about 5 ms each time the thread ran: ~40
    assert quick <= slow // 4  # none but what the machine's own noise makes
