"""Clocks: virtual time advances only when idle, in (time, priority, origin, seq) order."""

from __future__ import annotations

import asyncio

import pytest

from simulator.activity import CURRENT_LEASE
from simulator.clock import Activity, VirtualClock, WallClock


async def test_timers_fire_in_time_then_priority_then_insertion_order() -> None:
    clock = VirtualClock(Activity())
    fired: list[tuple[float, str]] = []
    for name, when, priority in (("c", 5, 0), ("a", 1, 0), ("late", 5, 1), ("b", 5, 0)):
        clock.call_at(when, lambda n=name: fired.append((clock.now(), n)), priority)
    await clock.run(10)
    assert fired == [(1, "a"), (5, "c"), (5, "b"), (5, "late")]
    assert clock.now() == 10


def _set_as(clock: VirtualClock, owner: str, when: float, callback) -> None:
    """Set a timer as the work of ``owner`` would (a task started for it)."""
    lease = clock.activity.lease(owner)
    token = CURRENT_LEASE.set(lease)
    try:
        clock.call_at(when, callback)
    finally:
        CURRENT_LEASE.reset(token)
        lease.release()


async def test_timers_due_together_fire_by_origin_then_in_the_order_their_origin_set_them(
) -> None:
    """Pushed zed, alpha, zed, alpha: fired alpha, alpha, zed, zed; each origin's in its own
    order. Whichever order the origins' work ran in, the firing order is the same."""
    orders = []
    for pushes in (["zed1", "alpha1", "zed2", "alpha2"], ["alpha1", "alpha2", "zed1", "zed2"]):
        clock = VirtualClock(Activity())
        fired: list[str] = []
        for name in pushes:
            _set_as(clock, name[:-1], 5, lambda n=name: fired.append(n))
        await clock.run(10)
        orders.append(fired)
    assert orders == [["alpha1", "alpha2", "zed1", "zed2"]] * 2


async def test_a_timers_callback_sets_timers_of_its_own_origin() -> None:
    """zed's timer at t=1 sets one for t=2; alpha's at t=1.5 sets one for t=2 after it. At
    t=2 alpha's fires first: the callbacks' timers belong to zed and alpha, not to whoever
    pushed first."""
    clock = VirtualClock(Activity())
    fired: list[str] = []
    _set_as(clock, "zed", 1, lambda: clock.call_at(2, lambda: fired.append("zed's")))
    _set_as(clock, "alpha", 1.5, lambda: clock.call_at(2, lambda: fired.append("alpha's")))
    await clock.run(3)
    assert fired == ["alpha's", "zed's"]


async def test_time_waits_for_work_in_flight_before_jumping() -> None:
    activity = Activity()
    clock = VirtualClock(activity)
    log: list[tuple[str, float]] = []

    async def slow_io(lease) -> None:
        await asyncio.sleep(0.05)  # real I/O stands in here
        log.append(("io done", clock.now()))
        lease.release()

    def start_io() -> None:
        asyncio.ensure_future(slow_io(activity.lease("io")))

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


# -- one owner of time: leases, asks in clock time, hangs named ----------------------------------

from simulator import Actor, AskTimeout, ClockError, Simulation, Stalled  # noqa: E402


class Sleeper(Actor):
    """Answers an ask after sleeping an hour of the clock's time."""

    def __init__(self, clock) -> None:
        super().__init__("sleeper")
        self.clock = clock

    async def receive(self, message: object) -> object:
        await self.clock.sleep(3600)
        return "slept"


class Asker(Actor):
    def __init__(self, other, clock, log) -> None:
        super().__init__("asker")
        self.other, self.clock, self.log = other, clock, log

    async def receive(self, message: object) -> None:
        try:
            self.log.append((await self.other.ask("wake", timeout_s=message), self.clock.now()))
        except AskTimeout:
            self.log.append(("timeout", self.clock.now()))


async def test_an_ask_timeout_is_in_the_clocks_time_not_wall_time() -> None:
    sim = Simulation(seed=0)
    log: list = []
    sleeper = await sim.spawn(Sleeper(sim.clock))
    asker = await sim.spawn(Asker(sleeper, sim.clock, log))
    asker.tell(10.0)
    await asyncio.wait_for(sim.run(7200), timeout=10)
    asker.tell(7200.0)
    await asyncio.wait_for(sim.run(20000), timeout=10)
    assert log == [("timeout", 10.0), ("slept", 7200 + 3600.0)]
    assert sim.activity.busy == 0
    await sim.shutdown()


async def test_sleeping_outside_counted_work_is_refused() -> None:
    clock = VirtualClock(Activity())
    with pytest.raises(RuntimeError, match="counted work"):
        await clock.sleep(1)


class Deadlock(Actor):
    """Asks its partner, which asks it back: neither ever answers."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.partner = None

    async def receive(self, message: object) -> object:
        return await self.partner.ask(message)


async def test_a_deadlock_fails_the_run_naming_the_work_in_flight_instead_of_hanging() -> None:
    sim = Simulation(seed=0, stall_s=0.2)
    a, b = Deadlock("a"), Deadlock("b")
    a.partner, b.partner = await sim.spawn(b), await sim.spawn(a)
    sim.clock.call_later(5, lambda: a.ref.tell("hello"))
    with pytest.raises(Stalled, match=r"t=5 s.*a <- str.*b <- str"):
        await asyncio.wait_for(sim.run(10), timeout=10)
    await sim.shutdown()
    assert sim.activity.busy == 0


async def test_the_debug_check_fails_a_run_whose_clock_would_pass_a_mailbox_holding_work() -> None:
    sim = Simulation(seed=0, debug=True)
    ref = await sim.spawn(Sleeper(sim.clock))
    sim.clock.call_later(1, lambda: None)
    ref.tell("a message")
    [envelope] = ref._cell.queue
    envelope.release()  # a bug in the bookkeeping: the message no longer counts as work
    with pytest.raises(ClockError, match="sleeper still holds 1 message"):
        await sim.run(2)
    await sim.shutdown()


async def test_a_reply_that_comes_after_its_asker_stopped_leaves_no_work_counted() -> None:
    """The asker waits (in clock time) on a slow actor and is stopped meanwhile; the reply
    that comes later must not count the gone asker's work again (the run would never idle)."""
    sim = Simulation(seed=0)
    log: list = []
    sleeper = await sim.spawn(Sleeper(sim.clock))
    asker = await sim.spawn(Asker(sleeper, sim.clock, log))
    asker.tell(7200.0)
    sim.clock.call_later(100, lambda: sim.start_task(sim.system.stop("asker")))
    await asyncio.wait_for(sim.run(10000), timeout=10)
    assert log == [] and sim.activity.busy == 0 and sim.system.failures == []
    assert sim.system.names() == ["sleeper"]
    await sim.shutdown()


async def test_a_cancelled_timer_holds_nothing_while_it_waits_in_the_heap() -> None:
    """An answered ask cancels its day-long timeout; the timer stays in the heap until its time,
    and must not keep the answer (relayed keys, say) alive until then."""
    import gc
    import weakref

    class Answer:
        pass

    clock = VirtualClock(Activity())
    answer = Answer()
    held = weakref.ref(answer)
    timer = clock.call_later(86400.0, lambda kept=answer: None)
    del answer
    gc.collect()
    assert held() is not None
    timer.cancel()
    gc.collect()
    assert held() is None and clock.next_time() is None
