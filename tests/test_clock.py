"""Clocks: virtual time advances only when idle, in (time, priority, seq) order."""

from __future__ import annotations

import asyncio

import pytest

from simulator.clock import Activity, VirtualClock, WallClock


async def test_timers_fire_in_time_then_priority_then_insertion_order() -> None:
    clock = VirtualClock(Activity())
    fired: list[tuple[float, str]] = []
    for name, when, priority in (("c", 5, 0), ("a", 1, 0), ("late", 5, 1), ("b", 5, 0)):
        clock.call_at(when, lambda n=name: fired.append((clock.now(), n)), priority)
    await clock.run(10)
    assert fired == [(1, "a"), (5, "c"), (5, "b"), (5, "late")]
    assert clock.now() == 10


async def test_time_waits_for_work_in_flight_before_jumping() -> None:
    activity = Activity()
    clock = VirtualClock(activity)
    log: list[tuple[str, float]] = []

    async def slow_io() -> None:
        await asyncio.sleep(0.05)  # real I/O stands in here
        log.append(("io done", clock.now()))
        activity.end()

    def start_io() -> None:
        activity.begin()
        asyncio.ensure_future(slow_io())

    clock.call_at(1, start_io)
    clock.call_at(2, lambda: log.append(("next", clock.now())))
    await clock.run(3)
    assert log == [("io done", 1), ("next", 2)]


async def test_cancelled_timers_do_not_fire_and_nothing_past_until_runs() -> None:
    clock = VirtualClock(Activity())
    fired: list[str] = []
    timer = clock.call_later(1, lambda: fired.append("cancelled"))
    clock.call_later(2, lambda: fired.append("kept"))
    clock.call_later(20, lambda: fired.append("too late"))
    timer.cancel()
    await clock.run(10)
    assert fired == ["kept"] and clock.next_time() == 20


async def test_a_scaled_wall_clock_runs_faster_than_real_time() -> None:
    clock = WallClock(time_scale=1000.0, epoch_s=0.0)
    done = asyncio.Event()
    clock.call_later(50.0, done.set)  # 50 simulated seconds = 50 ms
    await asyncio.wait_for(done.wait(), timeout=5)
    assert clock.now() >= 50.0


def test_a_negative_delay_is_refused() -> None:
    with pytest.raises(ValueError):
        VirtualClock(Activity()).call_later(-1, lambda: None)
