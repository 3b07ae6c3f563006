"""A Simulation owns one run: its clock, seeded RNG, actors, recorder and background tasks.

Nothing here knows about QKD. A builder (``nodes.build``) spawns actors into a Simulation and
schedules their timers; :meth:`Simulation.run` then drives the clock to ``until_s`` and
:meth:`Simulation.shutdown` stops every actor and task. No global state: a process may hold
many simulations at once (the tests do).
"""

from __future__ import annotations

import asyncio
import random
from typing import Any, Callable, Coroutine

from simulator.actor import SYSTEM, A, ActorRef, ActorSystem
from simulator.clock import Activity, Clock, VirtualClock, WallClock
from simulator.metrics import Recorder

ProgressFn = Callable[[float, float], None]


class Simulation:
    def __init__(self, seed: int, clock: str = "virtual", time_scale: float = 1.0) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.activity = Activity()
        self.system = ActorSystem(self.activity)
        self.clock: Clock = (VirtualClock(self.activity) if clock == "virtual"
                             else WallClock(time_scale, epoch_s=0.0))
        self.recorder = Recorder()

    def derived_rng(self, name: str) -> random.Random:
        """An RNG of its own for one actor, fixed by the run's seed and the actor's name."""
        return random.Random(f"{self.seed}:{name}")

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

    async def run(self, until_s: float, progress: ProgressFn | None = None) -> None:
        if isinstance(self.clock, VirtualClock):
            step = None if progress is None else (lambda now: progress(now, until_s))
            await self.clock.run(until_s, step)
        else:
            while (left_s := until_s - self.clock.now()) > 0:
                await asyncio.sleep(min(left_s / self.clock.time_scale, 0.5))
                if progress is not None:
                    progress(self.clock.now(), until_s)
        await self.activity.wait_idle()

    @property
    def steps(self) -> int:
        return self.clock.steps if isinstance(self.clock, VirtualClock) else 0

    async def shutdown(self) -> None:
        await self.system.stop_all()
