"""The outage timeline: each outage is applied at its start and lifted at its end, on the clock.

Generic: what an outage *does* is the ``apply`` callback's business (``nodes`` knows about KMs,
links and LKMs); this module only times the edges and records them as ``outage`` events
(data ``phase`` start|end and ``outage`` = the kind), which the plots shade and the
``recovered_within`` expectation reads.
"""

from __future__ import annotations

from typing import Callable, Sequence

from simulator import Simulation
from nodes.run.scenario import Outage

Apply = Callable[[Outage, bool], None]


def outage_node(outage: Outage) -> str:
    return outage.target if outage.target is not None else "partition"


def schedule_outages(sim: Simulation, outages: Sequence[Outage], apply: Apply) -> None:
    """Schedule every outage's start (and end, when it has a ``for``)."""
    for outage in outages:
        sim.clock.call_later(outage.at_s - sim.clock.now(), _edge(sim, outage, apply, True))
        if outage.for_s is not None:
            end_s = outage.at_s + outage.for_s
            sim.clock.call_later(end_s - sim.clock.now(), _edge(sim, outage, apply, False))


def _edge(sim: Simulation, outage: Outage, apply: Apply, starting: bool) -> Callable[[], None]:
    def fire() -> None:
        sim.record("outage", outage_node(outage), phase="start" if starting else "end",
                   outage=outage.kind)
        apply(outage, starting)

    return fire

