"""The outage table: every kind of outage this build runs, what it may target, and what it does.

:data:`OUTAGES` is both the effects and the supported set: scenario validation accepts exactly
its (kind, target kind) pairs, and the builder applies exactly its effects, at each outage's
start and (with a ``for``) its end. An effect acts on the network through :class:`Fabric`, by
messages to the KM and link actors (or by crashing and restarting an LKM). Outages compose:
each effect names its outage as the *cause*, and an element combines every cause active on it
(down while any holds it down, degrades multiplied, the highest QBER, delays added, an LKM
restarted when its last crash ends), so ending one outage never lifts another. A KM that is
down holds its links down too: no key is made or relayed into a KM that is not running. Each edge is
recorded as an ``outage`` event (data ``phase`` start|end and ``outage`` = the kind), which the
plots shade and the ``recovered_within`` expectation reads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence

from nodes.network import Degrade, Edge, SetDown, SetQber, SetUp, edge_key
from simulator import ActorRef, Simulation

if TYPE_CHECKING:
    from nodes.run.scenario import Outage


class Fabric(Protocol):
    """What an outage acts on (the builder's network)."""

    def km(self, km_id: str) -> ActorRef[Any]: ...

    def link(self, edge: Edge) -> ActorRef[Any]: ...

    def set_latency(self, edge: Edge, delay_s: float, cause: str = "") -> None:
        """While ``cause`` lasts, crossing ``edge`` takes ``delay_s`` longer (0 ends it)."""
        ...

    def edges(self) -> list[Edge]:
        """Every link, in name order."""
        ...

    def crash(self, lkm_id: str, cause: str = "") -> None:
        """``cause`` crashes the LKM (if nothing else holds it down already)."""
        ...

    def restart(self, lkm_id: str, cause: str = "") -> None:
        """``cause`` ends; the LKM restarts if no other crash still holds it."""
        ...


Effect = Callable[[Fabric, "Outage", bool, str], None]  # (network, outage, starting, cause)


def _km_down(fabric: Fabric, outage: Outage, starting: bool, cause: str) -> None:
    km = _target(outage)
    fabric.km(km).tell(SetDown(starting, cause))
    for edge in fabric.edges():
        if km in edge:
            fabric.link(edge).tell(SetUp(not starting, cause))


def _link_down(fabric: Fabric, outage: Outage, starting: bool, cause: str) -> None:
    fabric.link(link_edge(_target(outage))).tell(SetUp(not starting, cause))


def _degrade(fabric: Fabric, outage: Outage, starting: bool, cause: str) -> None:
    fraction = outage.fraction if starting and outage.fraction is not None else 1.0
    fabric.link(link_edge(_target(outage))).tell(Degrade(fraction, cause))


def _qber_rise(fabric: Fabric, outage: Outage, starting: bool, cause: str) -> None:
    """An eavesdropper or a fibre fault: the link's QBER rises to ``qber`` and the model gives
    the rate left (none above the abort threshold); at the end the model's own QBER returns."""
    qber = outage.qber if starting else None
    fabric.link(link_edge(_target(outage))).tell(SetQber(qber, cause))


def _link_latency(fabric: Fabric, outage: Outage, starting: bool, cause: str) -> None:
    _delay(fabric, [link_edge(_target(outage))], outage, starting, cause)


def _km_latency(fabric: Fabric, outage: Outage, starting: bool, cause: str) -> None:
    """A KM's delay is added to every link of that KM."""
    km = _target(outage)
    _delay(fabric, [edge for edge in fabric.edges() if km in edge], outage, starting, cause)


def _delay(fabric: Fabric, edges: list[Edge], outage: Outage, starting: bool,
           cause: str) -> None:
    delay_s = outage.delay_s if starting and outage.delay_s is not None else 0.0
    for edge in edges:
        fabric.set_latency(edge, delay_s, cause)


def _partition(fabric: Fabric, outage: Outage, starting: bool, cause: str) -> None:
    for edge in partition_cuts(outage.groups or (), fabric.edges()):
        fabric.link(edge).tell(SetUp(not starting, cause))


def _crash(fabric: Fabric, outage: Outage, starting: bool, cause: str) -> None:
    """The LKM's process dies (its actor and memory are gone, its SQLite file stays); when the
    last crash holding it ends, a new one starts on the same file and port."""
    (fabric.crash if starting else fabric.restart)(_target(outage), cause)


#: (outage kind, target kind) -> its effect; None: the outage names no target (partition)
OUTAGES: dict[tuple[str, str | None], Effect] = {
    ("down", "KM"): _km_down,
    ("down", "link"): _link_down,
    ("degrade", "link"): _degrade,
    ("qber_rise", "link"): _qber_rise,
    ("latency", "KM"): _km_latency,
    ("latency", "link"): _link_latency,
    ("partition", None): _partition,
    ("crash", "LKM"): _crash,
}


def target_kinds_of(kind: str) -> tuple[str | None, ...]:
    """What an outage of ``kind`` may target (in the table's order)."""
    return tuple(target for (k, target) in OUTAGES if k == kind)


def link_edge(target: str) -> Edge:
    """The edge of a link target written "KM1-KM2" (either way round)."""
    a, b = target.split("-", 1)
    return edge_key(a, b)


def partition_cuts(groups: Sequence[Sequence[str]], edges: Sequence[Edge]) -> list[Edge]:
    """The links between different groups (KMs in no group form one more group)."""
    group_of = {km: i for i, group in enumerate(groups) for km in group}
    rest = len(groups)
    return [edge for edge in edges if group_of.get(edge[0], rest) != group_of.get(edge[1], rest)]


def outage_node(outage: Outage) -> str:
    return outage.target if outage.target is not None else "partition"


def schedule_outages(sim: Simulation, fabric: Fabric, outages: Sequence[Outage],
                     target_kind: Callable[[str], str | None],
                     owns: Callable[[str], bool] = lambda node: True) -> None:
    """Schedule every outage's start (and end, when it has a ``for``) on the clock. In a
    region of a partitioned run every outage fires (latency is every region's to know) and
    acts on what the region holds; only the region that ``owns`` its node records it."""
    for index, outage in enumerate(outages):
        effect = OUTAGES[(outage.kind, target_kind(outage.target) if outage.target else None)]
        cause = f"outages.{index}"
        record = owns(outage_node(outage))
        sim.clock.call_later(outage.at_s - sim.clock.now(),
                             _edge(sim, fabric, outage, effect, True, cause, record))
        if outage.for_s is not None:
            end_s = outage.at_s + outage.for_s
            sim.clock.call_later(end_s - sim.clock.now(),
                                 _edge(sim, fabric, outage, effect, False, cause, record))


def _edge(sim: Simulation, fabric: Fabric, outage: Outage, effect: Effect,
          starting: bool, cause: str, record: bool) -> Callable[[], None]:
    def fire() -> None:
        if record:
            sim.record("outage", outage_node(outage), phase="start" if starting else "end",
                       outage=outage.kind)
        effect(fabric, outage, starting, cause)

    return fire


def _target(outage: Outage) -> str:
    assert outage.target is not None, "the table gives this kind a target"
    return outage.target
