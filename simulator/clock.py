"""Clocks: the only source of time in qkdsim.

Everything that needs the time or a timer is handed a :class:`Clock`. Two implementations:

* :class:`VirtualClock`, discrete-event: a heap of ``(time, priority, seq)`` timers. Time jumps to
  the next timer only when the :class:`Activity` counter says every actor is idle, and timers fire
  one at a time (the run waits for idleness again between two of them), so a run is a fixed
  sequence of steps and repeats exactly even when actors do real I/O (HTTP, SQLite).
* :class:`WallClock`: real time from the event loop, optionally scaled (``time_scale=60`` makes one
  simulated minute pass per real second).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from dataclasses import dataclass, field
from typing import Callable, Protocol

Callback = Callable[[], None]


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """What actors may ask of time."""

    def now(self) -> float:
        """Seconds since the start of the run (virtual) or since the epoch (wall)."""
        ...

    def call_later(self, delay_s: float, callback: Callback, priority: int = 0) -> Timer:
        """Run ``callback`` once, ``delay_s`` seconds from now."""
        ...

    async def sleep(self, delay_s: float) -> None:
        """Wait ``delay_s`` of this clock's seconds (only from counted background work)."""
        ...


class Activity:
    """Counts units of work in flight (queued or running actor messages, pending I/O).

    The virtual clock may only advance when the count is zero.
    """

    def __init__(self) -> None:
        self._busy = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def busy(self) -> int:
        return self._busy

    def begin(self) -> None:
        self._busy += 1
        self._idle.clear()

    def end(self) -> None:
        if self._busy <= 0:
            raise RuntimeError("Activity.end() without a matching begin()")
        self._busy -= 1
        if self._busy == 0:
            self._idle.set()

    async def wait_idle(self) -> None:
        """Return once nothing is in flight, after letting ready callbacks run."""
        while True:
            await self._idle.wait()
            for _ in range(3):  # let callbacks scheduled by the last step start their work
                await asyncio.sleep(0)
            if self._busy == 0:
                return


@dataclass(order=True)
class _Entry:
    when_s: float
    priority: int
    seq: int
    callback: Callback = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class VirtualClock:
    """Discrete-event clock; see the module docstring."""

    def __init__(self, activity: Activity, start_s: float = 0.0) -> None:
        self.activity = activity
        self._now_s = start_s
        self._heap: list[_Entry] = []
        self._seq = itertools.count()
        self.steps = 0

    def now(self) -> float:
        return self._now_s

    def call_later(self, delay_s: float, callback: Callback, priority: int = 0) -> Timer:
        if delay_s < 0:
            raise ValueError(f"negative delay {delay_s}")
        return self.call_at(self._now_s + delay_s, callback, priority)

    def call_at(self, when_s: float, callback: Callback, priority: int = 0) -> Timer:
        entry = _Entry(max(when_s, self._now_s), priority, next(self._seq), callback)
        heapq.heappush(self._heap, entry)
        return entry

    async def sleep(self, delay_s: float) -> None:
        """Wait in virtual time. The caller holds one unit of activity (an actor message or a
        started task); it is given back while waiting, so the clock can move, and taken again
        when the timer fires."""
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            self.activity.begin()
            woken.set_result(None)

        timer = self.call_later(delay_s, wake)
        self.activity.end()
        try:
            await woken
        except asyncio.CancelledError:
            if not woken.done():
                timer.cancel()
                self.activity.begin()
            raise

    def next_time(self) -> float | None:
        self._drop_cancelled()
        return self._heap[0].when_s if self._heap else None

    async def run(self, until_s: float, on_step: Callable[[float], None] | None = None) -> None:
        """Fire timers in order until ``until_s``; the clock then reads ``until_s``."""
        while True:
            await self.activity.wait_idle()
            nxt = self.next_time()
            if nxt is None or nxt > until_s:
                break
            entry = heapq.heappop(self._heap)
            self._now_s = entry.when_s
            self.steps += 1
            entry.callback()
            if on_step is not None:
                on_step(self._now_s)
        self._now_s = max(self._now_s, until_s)

    def _drop_cancelled(self) -> None:
        while self._heap and self._heap[0].cancelled:
            heapq.heappop(self._heap)


class _WallTimer:
    def __init__(self, handle: asyncio.TimerHandle) -> None:
        self._handle = handle

    def cancel(self) -> None:
        self._handle.cancel()


class WallClock:
    """Real time, scaled by ``time_scale`` simulated seconds per real second."""

    def __init__(self, time_scale: float = 1.0, epoch_s: float | None = None) -> None:
        if time_scale <= 0:
            raise ValueError("time_scale must be > 0")
        self.time_scale = time_scale
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._origin_loop_s = loop.time()
        self._origin_s = _epoch_now() if epoch_s is None else epoch_s

    def now(self) -> float:
        return self._origin_s + (self._loop.time() - self._origin_loop_s) * self.time_scale

    def call_later(self, delay_s: float, callback: Callback, priority: int = 0) -> Timer:
        return _WallTimer(self._loop.call_later(max(delay_s, 0.0) / self.time_scale, callback))

    async def sleep(self, delay_s: float) -> None:
        await asyncio.sleep(max(delay_s, 0.0) / self.time_scale)


def _epoch_now() -> float:
    """The one place qkdsim reads the system clock: the wall clock's origin."""
    import time

    return time.time()
