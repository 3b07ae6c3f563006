"""Relay messages that walk from KM to KM, each acting only where it is (decision 66).

Every interaction between two KMs is a message that takes time: a hop costs its link's
propagation and added latency plus the sending KM's processing. A message does at each KM only
what that KM owns, at the moment it is there:

- a link's key is read and spent at its **master** end, the KM first in name order (both ends
  hold the same key; one keeps the books). A message crossing the hop from its master is
  checked as it leaves; one crossing towards the master, as it arrives;
- an LKM is asked only by its own KM (a home pool ships at the far end, a slice is answered at
  the near end).

A trip has two legs. The **ask** goes from the near KM (the asking LKM's) to the far one along
the chosen path, checking each KM is up and, for keys, how many whole keys each hop holds now;
at the far end the job is done: a slice ships ``min(asked, what fits)`` keys out of the home
pool, a notice of consumed copies is handed to the LKM. The **carry** brings the keys back hop
by hop, spending each hop's bits (one-time pad) plus its authentication at the master: as many
whole keys as the hop holds go on, and those that do not go home. A hop that carries nothing, or
a KM that is down, ends the trip there: its keys go home, and the **answer** (naming the link or
KM) reaches the near KM after the latency of the path between. Key already spent on hops
crossed stays spent: it encrypted a message that was sent. Notices (answers, keys going home)
take the latency of the path they retrace and are not checked on the way.

The near KM keeps the asker's promise; an answer for an asker that is gone (its LKM crashed)
sends the keys home.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator, Mapping

from nodes.keynode import (
    ConsumeCopies,
    Directory,
    Key,
    KMUnreachable,
    Shipment,
    ShipSlice,
    UnshipSlice,
)
from nodes.network.link import Available, Spend, least_hop_delay_s
from nodes.network.routing import Edge, edge_key
from simulator import ActorRef, ActorStopped, Clock, Promise, tell_later


@dataclass(frozen=True, slots=True)
class ShipJob:
    """At the far end: ship up to ``count`` of ``owner``'s keys from ``home_lkm`` to ``to_lkm``."""

    owner: str
    home_lkm: str
    to_lkm: str
    count: int
    key_bits: int | None  # None: not known before shipping (no hop is checked for it)


@dataclass(frozen=True, slots=True)
class BitsJob:
    """At the far end: carry ``count`` keys' worth of bits back (no LKM: a bare relay)."""

    count: int
    key_bits: int


@dataclass(frozen=True, slots=True)
class CopiesJob:
    """At the far end: tell ``to_lkm`` these keys were consumed (the answer: how many it
    erased)."""

    to_lkm: str
    key_ids: tuple[str, ...]


Job = ShipJob | BitsJob | CopiesJob


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a trip's answer tells the asker. ``final``: no other path can help (an end is
    down, or the home pool keeps its reserve)."""

    ok: bool
    cause: str = "ok"  # "ok", "no_path", "no_key", "home_reserve", "unreachable"
    path: tuple[str, ...] = ()  # the far end first
    carried: int = 0
    shipment: Shipment | None = None  # the keys carried, for a slice
    shipped: int = 0  # keys the far end sent off (before any hop held some back)
    limited: bool = False  # a hop of the ask held fewer keys than asked
    sent_s: float = 0.0
    edge: Edge | None = None
    node: str | None = None
    final: bool = False
    erased: int = 0


@dataclass(frozen=True, slots=True)
class Ask:
    ticket: int
    route: tuple[str, ...]  # near KM first
    job: Job
    at: int = 0
    fits: int | None = None


@dataclass(frozen=True, slots=True)
class Carry:
    ticket: int
    route: tuple[str, ...]  # far KM first
    job: Job
    count: int
    key_bits: int
    sent_s: float
    keys: tuple[Key, ...] = ()
    shipped: int = 0
    limited: bool = False
    at: int = 0


@dataclass(frozen=True, slots=True)
class Answer:
    ticket: int
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class GoHome:
    """Keys that did not reach (or were not taken at) the near end, back to their pool."""

    shipment: Shipment


Trip = Ask | Carry | Answer | GoHome


@dataclass(frozen=True, slots=True)
class Arrive:
    """A relay message reaching a KM (the KM hands it to its network's handler)."""

    trip: Trip


def master(a: str, b: str) -> str:
    """The end of link a-b that keeps its key's books: the first in name order."""
    return edge_key(a, b)[0]


@dataclass
class Trips:
    """The per-KM steps of every trip (see the module docstring); a KM actor calls
    :meth:`arrive` with each :class:`Arrive` it receives."""

    directory: Directory
    kms: Mapping[str, ActorRef[Any]]
    links: Mapping[Edge, ActorRef[Any]]
    lkms: Mapping[str, ActorRef[Any]]
    record: Callable[..., None]
    clock: Clock
    hop_processing_s: float
    lengths_km: Mapping[Edge, float] = field(default_factory=dict)
    _asks: dict[int, Promise] = field(default_factory=dict)
    _added: dict[Edge, dict[str, float]] = field(default_factory=dict)  # link -> cause -> s
    _tickets: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def ticket(self) -> int:
        return next(self._tickets)

    def set_latency(self, edge: Edge, delay_s: float, cause: str = "") -> None:
        """While ``cause`` lasts, crossing ``edge`` takes ``delay_s`` longer (0 ends it; causes
        add up), as the link's own :class:`~nodes.network.link.SetLatency`. Every end reads it
        here, not from the link: the timeline that sets it is known everywhere."""
        causes = self._added.setdefault(edge, {})
        if delay_s:
            causes[cause] = delay_s
        else:
            causes.pop(cause, None)

    async def arrive(self, km: str, down: bool, trip: object, promise: Promise | None) -> None:
        if isinstance(trip, Ask):
            if promise is not None:  # the trip's first step, asked by the near end
                self._asks[trip.ticket] = promise
            await self._ask_step(km, down, trip)
        elif isinstance(trip, Carry):
            await self._carry_step(km, down, trip)
        elif isinstance(trip, Answer):
            self._settle(trip.ticket, trip.outcome)
        elif isinstance(trip, GoHome):
            await self.unship(trip.shipment)
        else:
            raise TypeError(f"unexpected trip {type(trip).__name__}")

    # -- the ask: near -> far --------------------------------------------------------------

    async def _ask_step(self, km: str, down: bool, trip: Ask) -> None:
        route, i = trip.route, trip.at
        if down:
            return self._fail(trip.ticket, route, i, None, "no_path", node=km,
                                    final=i in (0, len(route) - 1))
        fits = trip.fits
        for edge in self._mastered(route, i, km):
            available: int | None = await self.links[edge].ask(Available())
            if available is None:
                return self._fail(trip.ticket, route, i, None, "no_path", edge=edge)
            key_bits = _key_bits(trip.job)
            if key_bits is not None:
                here = available // key_bits
                if here == 0:
                    return self._fail(trip.ticket, route, i, None, "no_key", edge=edge)
                fits = here if fits is None else min(fits, here)
        if i < len(route) - 1:
            return self._hop(route[i], route[i + 1], replace(trip, at=i + 1, fits=fits))
        await self._far_end(km, trip, fits)

    async def _far_end(self, km: str, trip: Ask, fits: int | None) -> None:
        job, back = trip.job, tuple(reversed(trip.route))
        if isinstance(job, CopiesJob):
            try:
                erased: int = await self.ask_lkm(job.to_lkm, ConsumeCopies(job.key_ids))
            except KMUnreachable:
                return self._fail(trip.ticket, trip.route, trip.at, None, "unreachable",
                                        node=km, final=True)
            return self._answer(trip.ticket, back, 0, Outcome(True, erased=erased))
        want = job.count if fits is None else min(job.count, fits)
        limited = want < job.count
        if isinstance(job, BitsJob):
            carry = Carry(trip.ticket, back, job, want, job.key_bits, self.clock.now(),
                          shipped=want, limited=limited)
            return await self._carry_step(km, False, carry)
        try:
            keys: list[Key] = await self.ask_lkm(job.home_lkm, ShipSlice(job.owner, job.to_lkm,
                                                                         want))
        except KMUnreachable:
            return self._fail(trip.ticket, trip.route, trip.at, None, "unreachable",
                                    node=km, final=True)
        if not keys:  # the home pool is at its own threshold (or empty): it keeps the rest
            return self._answer(trip.ticket, back, 0, Outcome(
                False, "home_reserve", path=back, limited=limited, final=True))
        carry = Carry(trip.ticket, back, job, len(keys), len(keys[0].material) * 8,
                      self.clock.now(), tuple(keys), len(keys), limited)
        await self._carry_step(km, False, carry)

    # -- the carry: far -> near ------------------------------------------------------------

    async def _carry_step(self, km: str, down: bool, trip: Carry) -> None:
        route, i = trip.route, trip.at
        if down:
            return self._fail(trip.ticket, route, i, trip, "no_path", node=km,
                                    final=i == len(route) - 1)
        for edge in self._mastered(route, i, km):
            available: int | None = await self.links[edge].ask(Available())
            if available is None:
                return self._fail(trip.ticket, route, i, trip, "no_path", edge=edge)
            carried = min(trip.count, available // trip.key_bits)
            if carried == 0 or not await self.links[edge].ask(Spend(carried * trip.key_bits)):
                return self._fail(trip.ticket, route, i, trip, "no_key", edge=edge)
            if carried < trip.count:  # what this hop cannot carry goes home from here
                self._send_home(route, i, trip, trip.keys[carried:])
                trip = replace(trip, count=carried, keys=trip.keys[:carried])
        if i < len(route) - 1:
            return self._hop(route[i], route[i + 1], replace(trip, at=i + 1))
        job, shipment = trip.job, None
        if isinstance(job, ShipJob):
            shipment = Shipment(job.owner, job.home_lkm, job.to_lkm, trip.keys, route,
                                trip.count * trip.key_bits)
        self._settle(trip.ticket, Outcome(
            True, path=route, carried=trip.count, shipment=shipment, shipped=trip.shipped,
            limited=trip.limited, sent_s=trip.sent_s))

    # -- answers and notices ---------------------------------------------------------------

    def _settle(self, ticket: int, outcome: Outcome) -> None:
        """At the near KM: answer the asker, or, if it is gone, send its keys home."""
        promise = self._asks.pop(ticket, None)
        if promise is not None and not promise.done():
            promise.resolve(outcome)
        elif outcome.shipment is not None:
            self.go_home(outcome.shipment)

    def go_home(self, shipment: Shipment) -> None:
        """Keys at the near end that its LKM did not take: back along their route."""
        route = tuple(reversed(shipment.route))
        self._notice(route, 0, len(route) - 1, GoHome(shipment))

    def _fail(self, ticket: int, route: tuple[str, ...], i: int, carry: Carry | None,
                    cause: str, edge: Edge | None = None, node: str | None = None,
                    final: bool = False) -> None:
        """The trip ends at route[i]: its keys (if any) go home, its answer to the near end
        (asks run near -> far, carries far -> near)."""
        near = 0
        if carry is not None:
            self._send_home(route, i, carry, carry.keys)
            near = len(route) - 1
        self._notice(route, i, near, Answer(ticket, Outcome(
            False, cause, edge=edge, node=node, final=final)))

    def _answer(self, ticket: int, route: tuple[str, ...], i: int, outcome: Outcome) -> None:
        self._notice(route, i, len(route) - 1, Answer(ticket, outcome))

    def _send_home(self, route: tuple[str, ...], i: int, carry: Carry,
                   keys: tuple[Key, ...]) -> None:
        if keys and isinstance(carry.job, ShipJob):
            job = carry.job
            self._notice(route, i, 0, GoHome(Shipment(job.owner, job.home_lkm, job.to_lkm, keys,
                                                      route)))

    def _notice(self, route: tuple[str, ...], frm: int, to: int, trip: Trip) -> None:
        """Send ``trip`` from route[frm] to route[to], after the latency of the hops between."""
        step = 1 if to >= frm else -1
        delay_s = sum(self._hop_delay(route[j], route[j + step]) for j in range(frm, to, step))
        self._send(route[to], delay_s, trip)

    def _hop(self, here: str, beyond: str, trip: Ask | Carry) -> None:
        self._send(beyond, self._hop_delay(here, beyond), trip)

    def _send(self, km: str, delay_s: float, trip: Trip) -> None:
        tell_later(self.clock, delay_s, self.kms[km], Arrive(trip))  # KM may be another region's

    def _hop_delay(self, a: str, b: str) -> float:
        """Propagation in the link's fibre and the sending KM's processing, plus any added
        latency."""
        edge = edge_key(a, b)
        added = self._added.get(edge)
        return (least_hop_delay_s(self.lengths_km.get(edge, 0.0), self.hop_processing_s)
                + (sum(added.values()) if added else 0.0))

    def _mastered(self, route: tuple[str, ...], i: int, km: str) -> list[Edge]:
        """The hops next to route[i] whose books ``km`` keeps: the one just crossed, then the
        one ahead."""
        near = [(route[i - 1], km)] if i > 0 else []
        if i < len(route) - 1:
            near.append((km, route[i + 1]))
        return [edge_key(a, b) for a, b in near if master(a, b) == km]

    async def ask_lkm(self, lkm_id: str, message: object) -> Any:
        """An LKM that is down (crashed) is as unreachable as a KM that is down."""
        ref = self.lkms.get(lkm_id)
        if ref is None:
            raise KMUnreachable(f"{lkm_id} is down")
        try:
            return await ref.ask(message)
        except ActorStopped:
            raise KMUnreachable(f"{lkm_id} went down") from None

    async def unship(self, shipment: Shipment) -> None:
        """Give shipped keys back to their home pool; if the home LKM is down meanwhile they
        stay shipped there, and the run records how many (``relay_failure``, ``stranded``)."""
        ids = tuple(key.key_id for key in shipment.keys)
        try:
            await self.ask_lkm(shipment.home_lkm, UnshipSlice(shipment.owner, ids))
        except KMUnreachable:
            self.record("relay_failure", self.directory.km_of(shipment.home_lkm),
                        to=self.directory.km_of(shipment.to_lkm), keys=len(ids), stranded=len(ids))


def _key_bits(job: Job) -> int | None:
    return None if isinstance(job, CopiesJob) else job.key_bits
