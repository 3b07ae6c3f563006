"""Actors: one message at a time, ask replies and errors, supervision, activity counting."""

from __future__ import annotations

import asyncio
import functools
import gc
import weakref

import pytest

from simulator import Actor, ActorStopped, ActorSystem, Directive, Simulation


class Recorder(Actor):
    def __init__(self, name: str = "rec", directive: Directive = Directive.RESUME) -> None:
        super().__init__(name)
        self.seen: list[object] = []
        self.running = 0
        self.max_running = 0
        self.starts = 0
        self.directive = directive

    async def on_start(self) -> None:
        self.starts += 1

    async def on_failure(self, message: object, error: BaseException) -> Directive:
        return self.directive

    async def receive(self, message: object) -> object:
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        await asyncio.sleep(0)
        self.running -= 1
        if message == "boom":
            raise ValueError("boom")
        self.seen.append(message)
        return f"got {message}"


async def test_messages_are_handled_one_at_a_time_in_order() -> None:
    system = ActorSystem()
    actor = Recorder()
    ref = await system.spawn(actor)
    for i in range(20):
        ref.tell(i)
    assert await ref.ask("last") == "got last"
    assert actor.seen == [*range(20), "last"] and actor.max_running == 1
    await system.stop_all()


async def test_an_ask_gets_the_exception_and_the_actor_keeps_running() -> None:
    system = ActorSystem()
    actor = Recorder()
    actor.expected_errors = (ValueError,)
    ref = await system.spawn(actor)
    with pytest.raises(ValueError):
        await ref.ask("boom")
    assert await ref.ask(1) == "got 1"
    assert system.failures == []
    await system.stop_all()


async def test_a_failed_tell_is_recorded_and_the_directive_restarts_the_actor() -> None:
    system = ActorSystem()
    actor = Recorder(directive=Directive.RESTART)
    ref = await system.spawn(actor)
    ref.tell("boom")
    await ref.ask("after")
    assert [f.error for f in system.failures] == ["ValueError: boom"]
    assert system.failures[0].directive == "restart" and actor.starts == 2


async def test_activity_counts_queued_work_until_it_is_done() -> None:
    system = ActorSystem()
    ref = await system.spawn(Recorder())
    ref.tell(1)
    ref.tell(2)
    assert system.activity.busy == 2
    await system.activity.wait_idle()
    assert system.activity.busy == 0
    await system.stop_all()


async def test_asking_a_stopped_actor_fails_cleanly() -> None:
    system = ActorSystem()
    ref = await system.spawn(Recorder())
    await system.stop("rec")
    with pytest.raises(ActorStopped):
        await ref.ask(1)
    assert system.activity.busy == 0


async def test_the_stop_directive_stops_the_actor_and_refuses_later_messages() -> None:
    system = ActorSystem()
    ref = await system.spawn(Recorder(directive=Directive.STOP))
    ref.tell("boom")
    await system.activity.wait_idle()
    assert [f.directive for f in system.failures] == ["stop"]
    with pytest.raises(ActorStopped):
        await ref.ask(1)


class Batcher(Recorder):
    """Takes ints in batches (one call each); ``-1`` refuses only itself; strings one by one."""

    batchable = frozenset({int})

    def __init__(self) -> None:
        super().__init__("batcher")
        self.expected_errors = (ValueError,)
        self.batches: list[list[object]] = []

    async def receive_batch(self, messages) -> list[object]:
        self.batches.append(list(messages))
        await asyncio.sleep(0)
        if "crash" in self.seen:
            raise RuntimeError("the whole batch failed")
        return [ValueError(f"refused {m}") if m == -1 else f"batch {m}" for m in messages]


async def test_queued_messages_of_a_batchable_type_are_handled_in_one_batch_in_order() -> None:
    system = ActorSystem()
    actor = Batcher()
    ref = await system.spawn(actor)
    asks = [ref.ask(m) for m in (1, 2, "x", 3, -1, 4, 5)]
    results = await asyncio.gather(*asks, return_exceptions=True)
    assert actor.batches == [[1, 2], [3, -1, 4, 5]] and actor.seen == ["x"]
    assert [str(r) for r in results] == [
        "batch 1", "batch 2", "got x", "batch 3", "refused -1", "batch 4", "batch 5"]
    assert isinstance(results[4], ValueError) and system.failures == []
    assert system.activity.busy == 0
    await system.stop_all()


async def test_a_lone_batchable_message_goes_to_receive_and_a_batch_is_capped() -> None:
    system = ActorSystem()
    actor = Batcher()
    actor.max_batch = 3
    ref = await system.spawn(actor)
    assert await ref.ask("alone") == "got alone"
    assert await asyncio.gather(*(ref.ask(i) for i in range(7))) == [
        *(f"batch {i}" for i in range(6)), "got 6"]
    assert actor.batches == [[0, 1, 2], [3, 4, 5]] and actor.seen == ["alone", 6]
    await system.stop_all()


async def test_a_batch_that_raises_fails_each_of_its_messages_and_is_one_failure() -> None:
    system = ActorSystem()
    actor = Batcher()
    ref = await system.spawn(actor)
    await ref.ask("crash")
    results = await asyncio.gather(*(ref.ask(i) for i in range(3)), return_exceptions=True)
    assert [type(r) for r in results] == [RuntimeError] * 3
    assert [f.error for f in system.failures] == ["RuntimeError: the whole batch failed"]
    assert await ref.ask(9) == "got 9"  # resumed
    await system.stop_all()


# -- failures never hang and never vanish ---------------------------------------------------------

class Hooked(Actor):
    """An actor whose hooks can be told to raise; "boom" fails a message, "cancel" throws a stray
    CancelledError out of its handler (a bug that would end its loop)."""

    def __init__(self, name: str, directive: Directive = Directive.RESUME, **raising: bool) -> None:
        super().__init__(name)
        self.directive = directive
        self.raising = raising
        self.starts = self.stops = 0

    async def on_start(self) -> None:
        self.starts += 1
        if self.starts > 1 and self.raising.get("on_start"):
            raise RuntimeError("on_start broke")

    async def on_stop(self) -> None:
        self.stops += 1
        if self.raising.get("on_stop"):
            raise RuntimeError("on_stop broke")

    async def on_failure(self, message: object, error: BaseException) -> Directive:
        if self.raising.get("on_failure"):
            raise RuntimeError("on_failure broke")
        return self.directive

    async def receive(self, message: object) -> object:
        if message == "boom":
            raise ValueError("boom")
        if message == "cancel":
            raise asyncio.CancelledError()
        return message


async def settled(system: ActorSystem) -> None:
    """Wait until no work is in flight; a hang fails the test instead of blocking it."""
    await asyncio.wait_for(system.activity.wait_idle(), timeout=5)


async def test_an_actor_loop_that_dies_stops_the_actor_records_it_and_leaves_nothing_counted(
) -> None:
    system = ActorSystem()
    ref = await system.spawn(Hooked("loop"))
    ref.tell("cancel")
    ref.tell("queued behind it")
    await settled(system)
    assert [(f.actor, f.message, f.directive) for f in system.failures] == [
        ("loop", "actor loop", "stop")]
    assert "loop" not in system.names() and system.activity.busy == 0
    with pytest.raises(ActorStopped):
        await ref.ask("after")
    await system.stop_all()


async def test_a_supervisor_hook_that_raises_is_recorded_and_stops_the_actor() -> None:
    system = ActorSystem()
    actor = Hooked("sup", on_failure=True)
    ref = await system.spawn(actor)
    ref.tell("boom")
    await settled(system)
    assert [(f.message, f.error) for f in system.failures] == [
        ("str", "ValueError: boom"), ("on_failure", "RuntimeError: on_failure broke")]
    assert actor.stops == 1 and "sup" not in system.names()
    with pytest.raises(ActorStopped):
        await ref.ask(1)


async def test_a_restart_whose_on_start_raises_is_recorded_and_stops_the_actor() -> None:
    system = ActorSystem()
    actor = Hooked("rs", Directive.RESTART, on_start=True)
    ref = await system.spawn(actor)
    ref.tell("boom")
    await settled(system)
    assert [(f.message, f.directive) for f in system.failures] == [
        ("str", "restart"), ("restart", "stop")]
    assert "rs" not in system.names()
    with pytest.raises(ActorStopped):
        await ref.ask(1)


async def test_stop_all_stops_every_actor_although_one_on_stop_raises() -> None:
    system = ActorSystem()
    actors = [Hooked("a"), Hooked("b", on_stop=True), Hooked("c")]
    refs = [await system.spawn(actor) for actor in actors]
    await system.stop_all()
    assert [actor.stops for actor in actors] == [1, 1, 1] and system.names() == []
    assert [(f.actor, f.message, f.error) for f in system.failures] == [
        ("b", "on_stop", "RuntimeError: on_stop broke")]
    for ref in refs:
        with pytest.raises(ActorStopped):
            await ref.ask(1)


async def test_a_message_told_to_a_stopped_actor_is_a_recorded_dead_letter() -> None:
    system = ActorSystem()
    ref = await system.spawn(Hooked("gone"))
    await system.stop("gone")
    ref.tell("lost")
    assert system.dead_letters == 1 and system.activity.busy == 0
    assert [(f.actor, f.message, f.error) for f in system.failures] == [
        ("gone", "str", "dead letter: told to a stopped actor")]
    await system.stop_all()
    ref.tell("after the run")  # once everything is stopping, a dead letter is no failure
    assert system.dead_letters == 2 and len(system.failures) == 1


class Deferring(Actor):
    """Answers "later" asks only when told "now"."""

    def __init__(self) -> None:
        super().__init__("deferring")
        self.waiting = []

    async def receive(self, message: object) -> object:
        if message == "later":
            self.waiting.append(self.defer_reply())
            return None
        for promise in self.waiting:
            promise.resolve("answered")
        self.waiting = []
        return "done"


async def test_a_deferred_reply_arrives_when_given_and_is_refused_if_the_actor_stops() -> None:
    system = ActorSystem()
    ref = await system.spawn(Deferring())
    first = ref.ask("later")
    assert await ref.ask("now") == "done" and await first == "answered"
    pending = ref.ask("later")
    await settled(system)
    assert not pending.done()
    await system.stop("deferring")
    with pytest.raises(ActorStopped):
        await pending
    assert system.failures == []


async def test_a_shut_down_simulation_holds_none_of_its_actors() -> None:
    """What a run built may go before its report: stopping drops the actors' cells, and the
    timers still pending (a user's next mail) that would hold them."""
    sim = Simulation(1)
    actor = Recorder("held")
    await sim.spawn(actor)
    sim.clock.call_later(3600.0, functools.partial(actor.receive, "never"))  # pending at the end
    alive = weakref.ref(actor)
    del actor
    await sim.shutdown()
    gc.collect()
    assert alive() is None
