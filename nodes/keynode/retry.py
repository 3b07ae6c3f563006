"""Retry timers: a pool whose sync failed tries again on its own, after the scheduler's backoff.

Each LKM has one :class:`RetryTimers`. The jitter (x0.8 to x1.2) comes from an RNG seeded with
the scenario's seed and the LKM's name, so runs repeat and pools do not retry in step; a
restart seeds it afresh (decision 36 of docs/architecture.md).
"""

from __future__ import annotations

import random
from typing import Callable

from simulator import Clock, Timer

JITTER = (0.8, 1.2)


class RetryTimers:
    def __init__(self, clock: Clock, seed: str, fire: Callable[[str], None]) -> None:
        self.clock = clock
        self.fire = fire
        self._rng = random.Random(seed)
        self._timers: dict[str, Timer] = {}

    def plan(self, sae_id: str, backoff_s: float | None) -> None:
        """After a sync of ``sae_id``: a timer if it failed (``backoff_s`` set), none if not."""
        timer = self._timers.pop(sae_id, None)
        if timer is not None:
            timer.cancel()
        if backoff_s is not None:
            delay_s = backoff_s * self._rng.uniform(*JITTER)
            self._timers[sae_id] = self.clock.call_later(delay_s, lambda: self._due(sae_id))

    def _due(self, sae_id: str) -> None:
        self._timers.pop(sae_id, None)
        self.fire(sae_id)

    def cancel_all(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
