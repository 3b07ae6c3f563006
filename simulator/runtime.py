"""A Simulation owns one run: its clock, seeded RNG, actors, recorder and background tasks.

Nothing here knows about QKD. A builder spawns actors into a Simulation and schedules their
timers; :meth:`Simulation.run` then has the clock drive the run to ``until_s``,
:meth:`Simulation.settle` lets what is due now happen without moving time, and
:meth:`Simulation.shutdown` stops every actor and task. No global state: a process may hold
many simulations at once (the tests do).

``debug`` (default: the ``QKDSIM_DEBUG`` environment variable is set and not "0") adds checks
that cost time on every step: the virtual clock fails the run if it would advance while any
mailbox still holds a message.
"""

from __future__ import annotations

import asyncio
import os
import random
from typing import Any, Coroutine

from simulator.activity import Activity
from simulator.actor import A, ActorRef
from simulator.clock import Clock, Progress, VirtualClock, WallClock
from simulator.metrics import Recorder
from simulator.streams import Stream
from simulator.system import SYSTEM, ActorSystem


def debug_from_env() -> bool:
    return os.environ.get("QKDSIM_DEBUG", "0") not in ("", "0")


class Simulation:
    def __init__(self, seed: int, clock: str = "virtual", time_scale: float = 1.0,
                 debug: bool | None = None, stall_s: float = 60.0) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.activity = Activity()
        self.clock: Clock = (VirtualClock(self.activity, stall_s=stall_s) if clock == "virtual"
                             else WallClock(time_scale, epoch_s=0.0, activity=self.activity))
        self.system = ActorSystem(self.activity, self.clock)
        self.recorder = Recorder()
        self.debug = debug_from_env() if debug is None else debug
        if self.debug:
            self.clock.add_check(self.system.quiet_problem)

    def derived_rng(self, name: str) -> random.Random:
        """An RNG of its own for one actor, fixed by the run's seed and the actor's name."""
        return random.Random(f"{self.seed}:{name}")

    def derived_stream(self, name: str) -> Stream:
        """A small stream of its own (one int of state) for one flow of draws, fixed by the
        run's seed and the name: for the many, where an RNG each would cost 2.5 KiB apiece."""
        return Stream.named(self.seed, name)

    async def spawn(self, actor: A) -> ActorRef[A]:
        return await self.system.spawn(actor)

    def record(self, kind: str, node: str, **data: Any) -> None:
        self.recorder.event(self.clock.now(), kind, node, **data)

    def sample(self, node: str, metric: str, value: float) -> None:
        self.recorder.sample(self.clock.now(), node, metric, value)

    def start_task(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run background work that counts as activity until it finishes; a failure is
        recorded with the actors' failures (the run then exits non-zero)."""
        return self.system.start_task(SYSTEM, coro)

    async def run(self, until_s: float, progress: Progress | None = None) -> None:
        await self.clock.run(until_s, progress)

    async def settle(self) -> None:
        """Let everything due now happen (timers at the current time included)."""
        await self.clock.settle()

    @property
    def steps(self) -> int:
        return self.clock.steps

    async def shutdown(self) -> None:
        """Stop every actor, then drop the timers still pending (a user's next mail, a
        scheduled sync): they hold the actors, which the run no longer needs."""
        await self.system.stop_all()
        if isinstance(self.clock, VirtualClock):
            self.clock.clear()
        await asyncio.sleep(0)  # the stopped loops' done callbacks, which hold their cells
