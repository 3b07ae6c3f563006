"""Actors: one message at a time, ask replies and errors, supervision, activity counting."""

from __future__ import annotations

import asyncio

import pytest

from simulator.actor import Actor, ActorStopped, ActorSystem, Directive


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
