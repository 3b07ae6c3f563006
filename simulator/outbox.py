"""Messages between regions of a partitioned run: an actor of another region, as a reference.

A run split into regions (each its own :class:`~simulator.runtime.Simulation`) lets an actor
message an actor of another region only *later*, by at least the lookahead: the message waits
in this region's :class:`Outbox` with the key its timer would have had on one clock
(:meth:`~simulator.clock.VirtualClock.reserve`), and the engine hands it, at the end of the
window, to the receiving region, whose clock fires it under that key
(:meth:`~simulator.clock.VirtualClock.call_keyed`). :func:`tell_later` is how code that does
not know where its receiver is sends a message after a delay.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from simulator.clock import Clock, TimerKey, VirtualClock


@dataclass(frozen=True, slots=True)
class Letter:
    """A message for actor ``to`` of another region, due under ``key``."""

    key: TimerKey
    to: str
    message: object


@dataclass
class Outbox:
    """The letters one region's actors sent to other regions since the engine last took them."""

    clock: VirtualClock
    letters: list[Letter] = field(default_factory=list)

    def ref(self, name: str) -> RemoteRef:
        return RemoteRef(name, self)

    def take(self) -> list[Letter]:
        letters, self.letters = self.letters, []
        return letters


@dataclass(frozen=True, slots=True)
class RemoteRef:
    """An actor of another region: it can only be told something later (:func:`tell_later`)."""

    name: str
    outbox: Outbox

    def tell(self, message: object) -> None:
        raise RuntimeError(f"{self.name} is in another region: a message to it must take at "
                           "least the lookahead (tell_later)")

    def post(self, delay_s: float, message: object) -> None:
        clock = self.outbox.clock
        self.outbox.letters.append(Letter(clock.reserve(delay_s), self.name, message))


def tell_later(clock: Clock, delay_s: float, ref: Any, message: object) -> None:
    """Tell ``ref`` ``message`` ``delay_s`` from now, whichever region ``ref`` is in."""
    if isinstance(ref, RemoteRef):
        ref.post(delay_s, message)
    else:
        clock.call_later(delay_s, lambda: ref.tell(message))
