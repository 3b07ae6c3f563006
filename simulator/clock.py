"""Clocks: the only source of time in qkdsim, and the only owner of its passing.

Everything that needs the time or a timer is handed a :class:`Clock`, and a run is driven by
:meth:`Clock.run` (as SimPy's ``Environment.run``); nothing else steps time. Two
implementations:

* :class:`VirtualClock`, discrete-event: a heap of ``(time, priority, origin, seq)`` timers
  (timers due at the same time fire in a canonical order, below). Time jumps to the next timer
  only when no work is in flight (:class:`~simulator.activity.Activity`), and timers fire one at
  a time, the run waiting for idleness again between two of them, so a run is
  a fixed sequence of steps and repeats exactly even when actors do real I/O (HTTP, SQLite). A
  watchdog names the holders of work that has not moved for ``stall_s`` wall seconds
  (:class:`~simulator.activity.Stalled`) instead of hanging, and debug checks
  (:meth:`VirtualClock.add_check`) fail a run whose clock would advance while, say, a mailbox
  still holds work.
* :class:`WallClock`: real time from the event loop, optionally scaled (``time_scale=60`` makes
  one simulated minute pass per real second).

**Canonical order of timers due at the same time** (decision 68). A timer's ``origin`` is the
actor whose work set it (the message it is handling, or a task started for it), or, outside any
actor's work, the origin of the timer being fired (a timer's callback, and what it starts,
belongs to the chain that timer began; ``""`` before the first). ``seq`` counts the timers of
that origin. So timers due together fire by origin name, then in the order their origin set
them: an order that depends on what each actor did, never on when, globally, each timer was
pushed. A run split into regions that each fire only their own actors' timers keeps, region by
region, the order of the run in one process.
"""

from __future__ import annotations

import asyncio
import heapq
from typing import Callable, Protocol

from simulator.activity import CURRENT_LEASE, Activity, Stalled

Callback = Callable[[], None]
Progress = Callable[[float, float], None]  # (now_s, until_s)
Check = Callable[[], "str | None"]  # a debug check: what is wrong, or None
TimerKey = tuple[float, int, str, int]  # (when_s, priority, origin, origin's seq)


class ClockError(RuntimeError):
    """A debug check found the run's bookkeeping broken (see :meth:`VirtualClock.add_check`)."""


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    """What actors may ask of time, and what drives a run."""

    steps: int
    #: add to now() for real UTC (epoch seconds): a wall clock that counts from the start of a
    #: run knows when that was; virtual time has no real date, so it is 0 there
    utc_offset_s: float

    def now(self) -> float:
        """Seconds since the start of the run (virtual) or since the epoch (wall)."""
        ...

    def call_later(self, delay_s: float, callback: Callback, priority: int = 0) -> Timer:
        """Run ``callback`` once, ``delay_s`` seconds from now."""
        ...

    async def sleep(self, delay_s: float) -> None:
        """Wait ``delay_s`` of this clock's seconds (from counted work: a message or a task)."""
        ...

    async def run(self, until_s: float, progress: Progress | None = None) -> None:
        """Let time pass until ``until_s``; return once the work due by then is done."""
        ...

    async def settle(self) -> None:
        """Let everything due now happen, without moving time."""
        ...

    def add_check(self, check: Check) -> None:
        """In debug runs: ``check()`` must return None whenever time is about to move."""
        ...


class _Entry:
    """A timer. The heap holds ``(when_s, priority, origin, seq, entry)`` tuples: tuples compare
    in C, where a dataclass's generated ``__lt__`` cost 7 % of a message-passing run."""

    __slots__ = ("when_s", "callback", "origin", "cancelled")

    def __init__(self, when_s: float, callback: Callback, origin: str) -> None:
        self.when_s = when_s
        self.callback = callback
        self.origin = origin
        self.cancelled = False

    def cancel(self) -> None:
        """A cancelled timer stays in the heap until it comes up, holding nothing: an ask's
        day-long timeout holds its promise, and the promise the answer (relayed keys too)."""
        self.cancelled = True
        self.callback = _nothing


def _nothing() -> None:
    pass


class VirtualClock:
    """Discrete-event clock; see the module docstring."""

    utc_offset_s = 0.0

    def __init__(self, activity: Activity, start_s: float = 0.0, stall_s: float = 60.0) -> None:
        self.activity = activity
        self.stall_s = stall_s
        self._now_s = start_s
        self._heap: list[tuple[float, int, str, int, _Entry]] = []
        self._seqs: dict[str, int] = {}  # origin -> the timers it has set
        self._firing = ""  # the origin of the timer fired last
        self._checks: list[Check] = []
        self.steps = 0

    def now(self) -> float:
        return self._now_s

    def call_later(self, delay_s: float, callback: Callback, priority: int = 0) -> Timer:
        if delay_s < 0:
            raise ValueError(f"negative delay {delay_s}")
        return self.call_at(self._now_s + delay_s, callback, priority)

    def call_at(self, when_s: float, callback: Callback, priority: int = 0) -> Timer:
        return self._push(self._key(max(when_s, self._now_s), priority), callback)

    def reserve(self, delay_s: float, priority: int = 0) -> TimerKey:
        """The key a timer set now for ``delay_s`` from now would get, counted as set: for a
        message that will wait on another region's clock (:meth:`call_keyed` there)."""
        if delay_s < 0:
            raise ValueError(f"negative delay {delay_s}")
        return self._key(self._now_s + delay_s, priority)

    def call_keyed(self, key: TimerKey, callback: Callback) -> Timer:
        """A timer another region's clock reserved (:meth:`reserve`): it fires among this
        clock's timers where the one clock of an undivided run would have fired it."""
        if key[0] < self._now_s:
            raise ClockError(f"a timer for t={key[0]:g} s reached a clock at t={self._now_s:g} s "
                             "(a message between regions took less than the lookahead)")
        return self._push(key, callback)

    def _key(self, when_s: float, priority: int) -> TimerKey:
        """Origin: the actor whose work runs now, else the chain of the timer fired last."""
        lease = CURRENT_LEASE.get()
        origin = lease.origin() if lease is not None else self._firing
        seq = self._seqs.get(origin, 0)
        self._seqs[origin] = seq + 1
        return (when_s, priority, origin, seq)

    def _push(self, key: TimerKey, callback: Callback) -> _Entry:
        entry = _Entry(key[0], callback, key[2])
        heapq.heappush(self._heap, (*key, entry))
        return entry

    def add_check(self, check: Check) -> None:
        """Before each step, ``check()`` must return None; else the run fails with ClockError."""
        self._checks.append(check)

    async def sleep(self, delay_s: float) -> None:
        """Wait in virtual time. The caller's lease (its message or task) is suspended while it
        waits, so the clock can move, and renewed by the timer that wakes it."""
        lease = CURRENT_LEASE.get()
        if lease is None or not lease.held:
            raise RuntimeError("VirtualClock.sleep needs counted work: call it while handling an "
                               "actor message or from a task started with start_task")
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            lease.renew()
            if not woken.done():
                woken.set_result(None)

        timer = self.call_later(delay_s, wake)
        lease.suspend()
        try:
            await woken
        except asyncio.CancelledError:
            timer.cancel()
            lease.renew()  # the task goes on (to its clean-up) as counted work
            raise

    def clear(self) -> None:
        """Drop every pending timer, and the origins' counts (the run is over)."""
        self._heap.clear()
        self._seqs.clear()

    def next_time(self) -> float | None:
        self._drop_cancelled()
        return self._heap[0][0] if self._heap else None

    def step(self) -> None:
        """Fire the next timer (the caller has made sure nothing is in flight)."""
        self._drop_cancelled()
        entry = heapq.heappop(self._heap)[4]
        self._now_s = entry.when_s
        self._firing = entry.origin
        self.steps += 1
        entry.callback()

    async def run(self, until_s: float, progress: Progress | None = None) -> None:
        """Fire timers in order until ``until_s``, waiting for idleness before each; the clock
        then reads ``until_s`` (or stays where it is, if that is later)."""
        await self._fire(until_s, False, progress)
        self._now_s = max(self._now_s, until_s)

    async def run_before(self, end_s: float) -> None:
        """Fire the timers due before ``end_s`` (a partitioned run's window), and leave the
        clock at the last one fired: a message from another region may still come for any
        time from ``end_s`` on."""
        await self._fire(end_s, True, None)

    async def _fire(self, until_s: float, before: bool, progress: Progress | None) -> None:
        watchdog = _Watchdog(self)
        try:
            activity = self.activity
            while True:
                if not activity.idle():
                    await activity.wait_idle()
                nxt = self.next_time()
                if nxt is None or nxt > until_s or (before and nxt == until_s):
                    break
                self._run_checks()
                self.step()
                if progress is not None:
                    progress(self._now_s, until_s)
        finally:
            watchdog.stop()

    async def settle(self) -> None:
        await self.run(self._now_s)

    def _run_checks(self) -> None:
        for check in self._checks:
            problem = check()
            if problem is not None:
                raise ClockError(f"the clock would advance from t={self._now_s:g} s while "
                                 f"{problem}")

    def _drop_cancelled(self) -> None:
        while self._heap and self._heap[0][4].cancelled:
            heapq.heappop(self._heap)


class _Watchdog:
    """Fails the run (Stalled) when work in flight has not moved for the clock's ``stall_s``
    wall seconds: a deadlock or a lost wake-up, named by who holds the work."""

    def __init__(self, clock: VirtualClock) -> None:
        self._clock = clock
        self._seen = (-1, -1)
        loop = asyncio.get_running_loop()
        self._handle = loop.call_later(clock.stall_s, self._look)

    def _look(self) -> None:
        clock, activity = self._clock, self._clock.activity
        now = (activity.changes, clock.steps)
        if activity.busy and now == self._seen:
            activity.stall(Stalled(
                f"no progress for {clock.stall_s:g} s of wall time at t={clock.now():g} s; work "
                f"in flight: {', '.join(activity.holders()) or 'none named'}"))
            return
        self._seen = now
        self._handle = asyncio.get_running_loop().call_later(clock.stall_s, self._look)

    def stop(self) -> None:
        self._handle.cancel()


class _WallTimer:
    def __init__(self, handle: asyncio.TimerHandle) -> None:
        self._handle = handle

    def cancel(self) -> None:
        self._handle.cancel()


class WallClock:
    """Real time, scaled by ``time_scale`` simulated seconds per real second."""

    steps = 0  # timers fire on the event loop's own schedule; no steps of ours to count

    def __init__(self, time_scale: float = 1.0, epoch_s: float | None = None,
                 activity: Activity | None = None) -> None:
        if time_scale <= 0:
            raise ValueError("time_scale must be > 0")
        self.time_scale = time_scale
        self.activity = activity or Activity()
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._origin_loop_s = loop.time()
        started_s = _epoch_now()
        self._origin_s = started_s if epoch_s is None else epoch_s
        self.utc_offset_s = started_s - self._origin_s

    def now(self) -> float:
        return self._origin_s + (self._loop.time() - self._origin_loop_s) * self.time_scale

    def call_later(self, delay_s: float, callback: Callback, priority: int = 0) -> Timer:
        return _WallTimer(self._loop.call_later(max(delay_s, 0.0) / self.time_scale, callback))

    async def sleep(self, delay_s: float) -> None:
        await asyncio.sleep(max(delay_s, 0.0) / self.time_scale)

    async def run(self, until_s: float, progress: Progress | None = None) -> None:
        while (left_s := until_s - self.now()) > 0:
            await asyncio.sleep(min(left_s / self.time_scale, 0.5))
            if progress is not None:
                progress(self.now(), until_s)
        await self.settle()

    async def settle(self) -> None:
        await self.activity.wait_idle()

    def add_check(self, check: Check) -> None:
        """Real time moves on its own: there is no step to check before."""


def _epoch_now() -> float:
    """The one place qkdsim reads the system clock: the wall clock's origin."""
    import time

    return time.time()
