"""Key managers: key generation for home pools, whether a KM is up, and relay forwarding.

:class:`KeyManager` is an actor holding what one KM owns: its generation budget (key material
accrues at ``key_rate_bps``, up to an hour's worth) and whether it is up. Relay messages reaching it
(:class:`~nodes.network.trips.Arrive`) are handed, with whether it is up, to the network's
handler (``on_trip``): what a relay does at each KM is :mod:`nodes.network.trips`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from nodes.keynode import KMUnreachable
from nodes.network.trips import Arrive
from simulator import Actor, Clock, Promise

TripHandler = Callable[[str, bool, object, Promise | None], Awaitable[None]]

BUDGET_WINDOW_S = 3600.0


@dataclass(frozen=True, slots=True)
class Generate:
    """``count`` keys of ``key_bytes``; ``provision`` (a pool's first fill) is not rate-limited."""

    count: int
    key_bytes: int
    provision: bool = False


@dataclass(frozen=True, slots=True)
class Ping:
    """Answered while the KM is up; raises KMUnreachable while it is down."""


@dataclass(frozen=True, slots=True)
class SetDown:
    """``cause`` (an outage) holds the KM down, or no longer does; it is down while any cause
    holds it."""

    down: bool
    cause: str = ""


class KeyManager(Actor):
    expected_errors = (KMUnreachable,)

    def __init__(self, km_id: str, key_rate_bps: float, clock: Clock, rng: random.Random,
                 record: Callable[..., None], on_trip: TripHandler | None = None) -> None:
        super().__init__(f"km:{km_id}")
        self.on_trip = on_trip
        self.km_id = km_id
        self.key_rate_bps = key_rate_bps
        self.capacity_bits = key_rate_bps * BUDGET_WINDOW_S
        self.budget_bits = self.capacity_bits
        self.clock = clock
        self.rng = rng
        self.record = record
        self.down = False
        self._downs: set[str] = set()
        self._settled_s = clock.now()

    async def receive(self, message: object) -> Any:
        if isinstance(message, Arrive):
            assert self.on_trip is not None, "a KM outside a network gets no relay messages"
            return await self.on_trip(self.km_id, self.down, message.trip, self.defer_reply())
        if isinstance(message, SetDown):
            (self._downs.add if message.down else self._downs.discard)(message.cause)
            self.down = bool(self._downs)
            return None
        if self.down:
            raise KMUnreachable(f"{self.km_id} is down")
        if isinstance(message, Ping):
            return True
        if isinstance(message, Generate):
            return self._generate(message)
        raise TypeError(f"unexpected message {type(message).__name__}")

    def _generate(self, msg: Generate) -> list[bytes]:
        now = self.clock.now()
        self.budget_bits = min(self.capacity_bits,
                               self.budget_bits + (now - self._settled_s) * self.key_rate_bps)
        self._settled_s = now
        count = msg.count
        if not msg.provision:
            count = min(count, int(self.budget_bits // (msg.key_bytes * 8)))
            self.budget_bits -= count * msg.key_bytes * 8
        if count:
            self.record("generate", self.km_id, keys=count, provision=msg.provision)
        return [self.rng.randbytes(msg.key_bytes) for _ in range(count)]
