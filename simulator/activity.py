"""Work in flight: the count the virtual clock waits on, kept as leases.

A :class:`Lease` is one unit of work in flight, held by whoever does the work: every queued or
running actor message is one (the envelope itself), and so is every task started through
:meth:`~simulator.system.ActorSystem.start_task`. :class:`Activity` counts the leases held, and
the virtual clock may only advance when that count is zero.

The lease of the work now running is in :data:`CURRENT_LEASE` (set by the actor loop for each
message and by ``start_task`` for each task). Code that waits on the clock, such as
``VirtualClock.sleep`` or an ``ask`` with a timeout, *suspends* that lease while it waits (so
time can move) and *renews* it in the very callback that wakes it (so there is never a moment
when the work is neither counted nor finished). Nothing else begins or ends a unit of work.
"""

from __future__ import annotations

import asyncio
from contextvars import ContextVar


class Stalled(RuntimeError):
    """Work in flight has not moved for the clock's stall limit: a hang, named by its holders."""


class Lease:
    """One unit of work in flight. Created held; :meth:`release` ends it (once: a second call does
    nothing); :meth:`suspend` and :meth:`renew` let the holder wait on the clock."""

    __slots__ = ("_activity", "held", "waiting")

    def __init__(self, activity: Activity) -> None:
        self._activity = activity
        self.held = True
        self.waiting = False  # suspended while its holder waits on the clock
        activity._begin(self)

    def release(self) -> None:
        if self.held:
            self.held = False
            self._activity._end(self)

    def suspend(self) -> None:
        """Stop counting while the holder waits on the clock; whoever wakes it calls renew."""
        if self.held:
            self.release()
            self.waiting = True

    def renew(self) -> None:
        if not self.held:
            self.held = True
            self.waiting = False
            self._activity._begin(self)

    def describe(self) -> str:
        """Who holds this unit, for reports of a stalled run."""
        return type(self).__name__

    def origin(self) -> str:
        """The actor whose work this is ("" for none): timers it sets are ordered by it."""
        return ""


#: the lease of the actor message or started task that is running now (None outside both)
CURRENT_LEASE: ContextVar[Lease | None] = ContextVar("qkdsim_current_lease", default=None)


class TaskLease(Lease):
    """The lease of a started background task."""

    __slots__ = ("owner",)

    def __init__(self, activity: Activity, owner: str) -> None:
        self.owner = owner
        super().__init__(activity)

    def describe(self) -> str:
        return f"a task of {self.owner}"

    def origin(self) -> str:
        return self.owner


class Activity:
    """Counts the leases held (queued or running actor messages, started tasks)."""

    def __init__(self) -> None:
        self._held: set[Lease] = set()
        #: one future per waiter in wait_idle, resolved (in order) when the count reaches zero
        self._waiters: list[asyncio.Future[None]] = []
        self._stalled: Stalled | None = None
        #: how many times a lease began or ended: a watchdog compares it to see progress
        self.changes = 0

    @property
    def busy(self) -> int:
        return len(self._held)

    def lease(self, owner: str) -> TaskLease:
        """A new held unit of work for ``owner`` (a task's)."""
        return TaskLease(self, owner)

    def _begin(self, lease: Lease) -> None:
        self._held.add(lease)
        self.changes += 1

    def _end(self, lease: Lease) -> None:
        self._held.discard(lease)
        self.changes += 1
        if not self._held and self._waiters:
            self._wake()

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def holders(self, limit: int = 10) -> list[str]:
        """Who holds work in flight (at most ``limit``, in a fixed order), for reports."""
        return sorted(lease.describe() for lease in self._held)[:limit]

    def stall(self, error: Stalled) -> None:
        """Give up waiting: every :meth:`wait_idle` raises ``error`` from now on."""
        self._stalled = error
        self._wake()

    def idle(self) -> bool:
        """No lease is held and the run has not stalled: :meth:`wait_idle` would return at once
        (the clock asks this first, sparing a coroutine per step that makes no work)."""
        return not self._held and self._stalled is None

    async def wait_idle(self) -> None:
        """Return once no lease is held (at once if none is)."""
        while True:
            if self._stalled is not None:
                raise self._stalled
            if not self._held:
                return
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:  # cancelled: not woken, still listed
                    self._waiters.remove(waiter)
