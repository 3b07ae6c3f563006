"""The engine's cost per event in event-loop turns (issue 18): a mailbox wakes its loop once for
a burst of messages, a clock step that makes no work takes no turn, and a message takes two (the
actor's, then the clock's); the idle waiters are bare futures that a cancellation leaves no
trace of."""

from __future__ import annotations

import asyncio

import pytest

from simulator import Activity, Actor, ActorSystem, Simulation, Stalled


class Log(Actor):
    def __init__(self, name: str = "log") -> None:
        super().__init__(name)
        self.seen: list[object] = []

    async def receive(self, message: object) -> None:
        self.seen.append(message)


class TurnCounter:
    """Counts event-loop iterations: a callback that schedules itself once per iteration."""

    def __init__(self) -> None:
        self.turns = 0
        self._loop = asyncio.get_running_loop()
        self._handle = self._loop.call_soon(self._tick)

    def _tick(self) -> None:
        self.turns += 1
        self._handle = self._loop.call_soon(self._tick)

    def stop(self) -> None:
        self._handle.cancel()


async def test_a_burst_of_messages_is_handled_in_one_wake_up() -> None:
    system = ActorSystem()
    actor = Log()
    ref = await system.spawn(actor)
    await asyncio.sleep(0)  # the loop starts and waits on its empty mailbox
    cell = actor._cell
    assert cell is not None and cell.waiter is not None
    for i in range(3):
        ref.tell(i)
    assert cell.waiter is None  # woken by the first, not again by the others
    await asyncio.sleep(0)  # one turn: the loop takes all three
    assert actor.seen == [0, 1, 2] and system.activity.busy == 0
    await system.stop_all()


async def test_a_clock_step_that_makes_no_work_takes_no_loop_turn() -> None:
    sim = Simulation(1)
    fired: list[float] = []
    for i in range(100):
        sim.clock.call_later(i * 0.1, lambda: fired.append(sim.clock.now()))
    counter = TurnCounter()
    await sim.run(20.0)
    counter.stop()
    assert len(fired) == 100 and counter.turns == 0


async def test_a_message_from_a_timer_takes_two_loop_turns() -> None:
    sim = Simulation(1)
    actor = Log()
    ref = await sim.spawn(actor)
    await sim.settle()
    await asyncio.sleep(0)
    for i in range(50):
        sim.clock.call_later(1.0 + i, lambda i=i: ref.tell(i))  # type: ignore[misc]
    counter = TurnCounter()
    await sim.run(100.0)
    counter.stop()
    assert actor.seen == list(range(50))
    assert counter.turns <= 2 * 50 + 2  # the woken actor's turn, then the clock's
    await sim.shutdown()


async def test_a_cancelled_idle_wait_leaves_no_waiter_and_a_stall_is_not_idle() -> None:
    activity = Activity()
    assert activity.idle()
    lease = activity.lease("test")
    assert not activity.idle()
    waiting = asyncio.ensure_future(activity.wait_idle())
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert activity._waiters == []
    waiting = asyncio.ensure_future(activity.wait_idle())
    await asyncio.sleep(0)
    lease.release()
    await asyncio.wait_for(waiting, 1)
    activity.stall(Stalled("stuck"))
    assert not activity.idle()
    with pytest.raises(Stalled):
        await activity.wait_idle()
