"""Key managers: key generation for home pools, whether a KM is up, and relay forwarding.

:class:`KeyManager` is an actor holding what one KM owns: its generation budget (key material
accrues at ``key_rate_bps``, up to an hour's worth) and whether it is up. It also forwards relay
messages (:class:`Forward`): each hop is a message from one KM actor to the next, delivered
after the link's propagation and added latency plus the sending KM's processing time. Which
path, and the spending of link key, is :mod:`nodes.network.relay`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable

from nodes.keynode import KMUnreachable
from nodes.network.link import GetHopDelay
from simulator import Actor, ActorRef, Clock, Promise

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
class Forward:
    """A relay message on its way. ``legs`` are the hops still ahead, each (the link to cross,
    the KM beyond it); the last KM resolves ``arrived`` (the first KM's deferred reply to the
    relay that asked it), and a KM that is down rejects it."""

    legs: tuple[tuple[ActorRef[Any], ActorRef[Any]], ...]
    processing_s: float
    arrived: Promise | None = None


@dataclass(frozen=True, slots=True)
class SetDown:
    """``cause`` (an outage) holds the KM down, or no longer does; it is down while any cause
    holds it."""

    down: bool
    cause: str = ""


class KeyManager(Actor):
    expected_errors = (KMUnreachable,)

    def __init__(self, km_id: str, key_rate_bps: float, clock: Clock, rng: random.Random,
                 record: Callable[..., None]) -> None:
        super().__init__(f"km:{km_id}")
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
        if isinstance(message, Forward):
            return await self._forward(message)
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

    async def _forward(self, msg: Forward) -> None:
        arrived = msg.arrived or self.defer_reply()
        assert arrived is not None, "a relay asks its first KM"
        if self.down:
            arrived.reject(KMUnreachable(f"{self.km_id} went down under a relay"))
        elif not msg.legs:
            arrived.resolve(True)
        else:
            link, beyond = msg.legs[0]
            delay_s = await link.ask(GetHopDelay()) + msg.processing_s
            onward = Forward(msg.legs[1:], msg.processing_s, arrived)
            self.clock.call_later(delay_s, lambda: beyond.tell(onward))

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
