"""A QKD link between two KMs: identical key material at both ends, at a rate, into a buffer.

The buffer is settled lazily: whenever the link is touched, the bits generated since the last
touch (the rate model integrated over the elapsed time, times the degrade fraction, zero while
down) are added, capped at ``buffer_bits``. Relays spend bits from it (one-time pad, hop by hop).
Buffer states use QKDNetSim's vocabulary and are recorded as ``link_state`` events when a touch
observes a change: READY (at least 30 % full), WARNING (10-30 %), CHARGING (below 10 %), EMPTY
(less than one key's worth).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from simulator import Actor, Clock

KEY_BITS_MIN = 8192


@dataclass(frozen=True, slots=True)
class Spend:
    """Take ``bits`` of link key; the reply is True, or False (down, or not enough) with nothing
    taken."""

    bits: int


@dataclass(frozen=True, slots=True)
class Refund:
    """Give back bits a relay spent but could not use (its next hop failed)."""

    bits: int


@dataclass(frozen=True, slots=True)
class SetUp:
    up: bool


@dataclass(frozen=True, slots=True)
class Degrade:
    """Produce only ``fraction`` of the model's rate (1.0 restores it)."""

    fraction: float


@dataclass(frozen=True, slots=True)
class Level:
    """Ask for the buffer level in bits."""


@dataclass(frozen=True, slots=True)
class SetLatency:
    """Messages crossing this link take ``delay_s`` longer (0 restores it)."""

    delay_s: float


@dataclass(frozen=True, slots=True)
class GetLatency:
    pass


RateSteps = Sequence[tuple[float, float]]  # (from time s, rate bps), sorted by time


def generated_bits(steps: RateSteps, t0: float, t1: float) -> float:
    """The integral of a piecewise-constant rate over [t0, t1]."""
    total = 0.0
    for i, (start, rate) in enumerate(steps):
        end = steps[i + 1][0] if i + 1 < len(steps) else float("inf")
        lo, hi = max(t0, start if i else float("-inf")), min(t1, end)
        if hi > lo:
            total += rate * (hi - lo)
    return total


class QKDLink(Actor):
    def __init__(self, link_id: str, steps: RateSteps, buffer_bits: int, clock: Clock,
                 record: Callable[..., None]) -> None:
        super().__init__(f"link:{link_id}")
        self.link_id = link_id
        self.steps = tuple(steps)
        self.capacity_bits = float(buffer_bits)
        self.bits = float(buffer_bits)
        self.clock = clock
        self.record = record
        self.up = True
        self.fraction = 1.0
        self.delay_s = 0.0
        self._settled_s = clock.now()
        self.state = "READY"
        self.spent_bits = 0

    async def receive(self, message: object) -> Any:
        self._settle()
        if isinstance(message, Spend):
            return self._spend(message.bits)
        if isinstance(message, Refund):
            self.bits = min(self.capacity_bits, self.bits + message.bits)
            self.spent_bits -= message.bits
        elif isinstance(message, SetUp):
            self.up = message.up
        elif isinstance(message, Degrade):
            self.fraction = message.fraction
        elif isinstance(message, Level):
            return self.bits
        elif isinstance(message, SetLatency):
            self.delay_s = message.delay_s
        elif isinstance(message, GetLatency):
            return self.delay_s
        else:
            raise TypeError(f"unexpected message {type(message).__name__}")
        self._observe()
        return None

    def _spend(self, bits: int) -> bool:
        if not self.up or self.bits < bits:
            return False
        self.bits -= bits
        self.spent_bits += bits
        self._observe()
        return True

    def _settle(self) -> None:
        now = self.clock.now()
        if self.up and now > self._settled_s:
            made = generated_bits(self.steps, self._settled_s, now) * self.fraction
            self.bits = min(self.capacity_bits, self.bits + made)
        self._settled_s = now

    def _observe(self) -> None:
        share = self.bits / self.capacity_bits
        state = ("EMPTY" if self.bits < KEY_BITS_MIN else "CHARGING" if share < 0.1 else
                 "WARNING" if share < 0.3 else "READY")
        if not self.up:
            state = "DOWN"
        if state != self.state:
            self.state = state
            self.record("link_state", self.link_id, state=state, bits=round(self.bits))
