"""Outages started and ended *now*, on a running network: the core of fault injection (the
pytest plugin's ``start_outage``/``end_outage``; a dashboard's control API would call the same).

An injected outage is a scenario outage without ``at``: the same kinds, targets and fields, the
same validation (errors name the field), the same effects from :data:`OUTAGES` and the same
``outage`` events, so the records of a run cannot tell it from a scheduled one. Each has its
own cause (``injected.<n>``), so it composes with scheduled ones like they compose with each
other. With ``for`` it ends by itself; without, when :meth:`OutageControl.end` is called.
Call from the network's own event loop (the plugin hops threads for its caller).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

from pydantic import ValidationError

from nodes.run.outages import OUTAGES, Effect, Fabric, outage_node
from nodes.run.scenario import Outage
from nodes.run.scenario.loading import error_lines
from simulator import Simulation, Timer

if TYPE_CHECKING:
    from nodes.run.scenario import Scenario


class OutageError(ValueError):
    """The outage asked for cannot be: the message names the field."""


@dataclass
class Injected:
    outage: Outage
    effect: Effect
    spec: dict[str, Any]  # as asked for
    ending: Timer | None = None


class OutageControl:
    """The outages injected into one running network, by ID."""

    def __init__(self, sim: Simulation, fabric: Fabric, scenario: Scenario,
                 journal: Callable[[str, str, Mapping[str, Any]], None] | None = None) -> None:
        """``journal(phase, id, outage)`` hears every start and end (a served run's
        ``--record`` writes them to its trace, which replays them)."""
        self.sim, self.fabric, self.scenario, self.journal = sim, fabric, scenario, journal
        self.active: dict[str, Injected] = {}
        self._count = 0
        self._replayed: dict[str, str] = {}  # a recorded outage's id -> the one replaying it

    def start(self, spec: Mapping[str, Any]) -> str:
        """Start the outage ``spec`` (kind, target, and for/fraction/qber/delay/groups as in a
        scenario; no ``at``) now; its ID ends it."""
        if "at" in spec:
            raise OutageError("at: an injected outage starts now; leave `at` out")
        try:
            outage = Outage.model_validate({**spec, "at": self.sim.clock.now()})
        except ValidationError as error:
            raise OutageError("; ".join(error_lines(error, "outage"))) from None
        target_kind = self.scenario.target_kind(outage.target) if outage.target else None
        if outage.target is not None and target_kind is None:
            raise OutageError(f"target: unknown target {outage.target!r}")
        effect = OUTAGES.get((outage.kind, target_kind))
        if effect is None:
            raise OutageError(f"kind: an outage of kind {outage.kind!r} cannot target a "
                              f"{target_kind}")
        self._count += 1
        outage_id = f"injected.{self._count}"
        injected = Injected(outage, effect, dict(spec))
        self.active[outage_id] = injected
        self._edge(outage_id, injected, True)
        if outage.for_s is not None:
            injected.ending = self.sim.clock.call_later(outage.for_s,
                                                        lambda: self.end(outage_id))
        return outage_id

    def end(self, outage_id: str) -> None:
        """End an injected outage now (KeyError for an unknown or ended one)."""
        injected = self.active.pop(outage_id)
        if injected.ending is not None:
            injected.ending.cancel()
        self._edge(outage_id, injected, False)

    def _edge(self, outage_id: str, injected: Injected, starting: bool) -> None:
        outage = injected.outage
        self.sim.record("outage", outage_node(outage), phase="start" if starting else "end",
                        outage=outage.kind)
        injected.effect(self.fabric, outage, starting, outage_id)
        if self.journal is not None:
            self.journal("start" if starting else "end", outage_id, injected.spec)

    def replay(self, phase: str, recorded_id: str, spec: Mapping[str, Any]) -> None:
        """Apply a recorded injection again (a replay's trace): a start starts the same outage
        now, an end ends the one that start made."""
        if phase == "start":
            self._replayed[recorded_id] = self.start(spec)
        elif recorded_id in self._replayed:
            self.end(self._replayed.pop(recorded_id))

