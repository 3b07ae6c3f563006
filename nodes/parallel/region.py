"""One region of a partitioned run: its part of the network on its own virtual clock.

A :class:`Region` builds only what it holds (its KMs, the links they are the master end of,
their LKMs with their SQLite files, and those LKMs' users), records into its own folder, and
is driven by the engine a window at a time (:mod:`nodes.parallel.engine`): letters from other
regions in, its clock fired up to the window's end, its own letters and link-state readings
out. In this process, or in a Ray actor (:class:`RegionActor` holds one).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from nodes.run import PER_REQUEST_KINDS, Network, Part, Scenario, parse_scenario
from simulator import (
    ActorRef,
    ClockError,
    Letter,
    Outbox,
    RemoteRef,
    Simulation,
    Stalled,
    VirtualClock,
)

Readings = list[tuple[int, dict[tuple[str, str], "int | None"]]]


@dataclass
class Exchange:
    """What a region hands the engine after a step: letters for other regions, the link-state
    rounds it read, and when its next timer is due (None: none)."""

    letters: list[Letter] = field(default_factory=list)
    readings: Readings = field(default_factory=list)
    next_s: float | None = None
    busy_s: float = 0.0  # wall seconds the region worked on the step


@dataclass
class Ending:
    """A region's share of the run's summary."""

    delivered_ids: Counter[str]
    counts: dict[str, int]
    links: list[tuple[str, dict[str, Any]]]  # (link ID, its books)
    steps: int
    shared_steps: int
    failures: list[str]


class Region:
    """See the module docstring. ``data`` is the scenario as written (``scenario.yaml``)."""

    def __init__(self, data: dict[str, Any], index: int, kms: tuple[str, ...],
                 out_dir: str, stall_s: float = 60.0) -> None:
        self.scenario: Scenario = parse_scenario(data)
        self.index = index
        self.folder = Path(out_dir) / "regions" / f"region-{index}"
        self.folder.mkdir(parents=True, exist_ok=True)
        self.sim = Simulation(self.scenario.seed, "virtual", stall_s=stall_s)
        self.sim.recorder.summarise(*PER_REQUEST_KINDS)
        self.sim.recorder.stream_to(self.folder)
        clock = self.sim.clock
        assert isinstance(clock, VirtualClock)
        self.clock = clock
        self.outbox = Outbox(clock)
        self.network = Network(self.scenario, self.sim, Path(out_dir) / "state",
                               part=Part(index, frozenset(kms), self.outbox))
        self.error: str | None = None
        self._refs: dict[str, ActorRef[Any]] = {}

    async def start_links(self) -> Exchange:
        await self.network.start_links()
        return self._exchange()

    async def start_users(self, readings: Readings) -> Exchange:
        self._add(readings)
        await self.network.start_users()
        network = self.network  # who letters may be for: this region's KMs and users
        self._refs = {name: ref for name, ref in {**network.kms, **network.saes}.items()
                      if not isinstance(ref, RemoteRef)}
        return self._exchange()

    async def window(self, end_s: float, letters: list[Letter], readings: Readings) -> Exchange:
        """Take the letters and readings of other regions, then fire every timer due before
        ``end_s``."""
        began = time.perf_counter()
        self._add(readings)
        for letter in letters:
            self.clock.call_keyed(letter.key, _delivery(self._refs[letter.to], letter.message))
        try:
            await self.clock.run_before(end_s)
        except (Stalled, ClockError) as error:  # recorded, and the engine stops the run
            self.error = f"engine: {type(error).__name__}: {error}"
        exchange = self._exchange()
        exchange.busy_s = time.perf_counter() - began
        return exchange

    async def finish(self, end_s: float) -> Ending:
        """The run's end: time reaches ``end_s``, a closing pass of samples, the books."""
        network, sim = self.network, self.sim
        counts: dict[str, int] = {}
        links: list[tuple[str, dict[str, Any]]] = []
        try:
            if self.error is None:
                await sim.run(end_s)
                await network.sample_pools(closing=True)
                counts = await network.audit_counts()
                accounts = await network.link_accounts()
                links = [(link.id, books) for link, books in zip(network.holds.links, accounts)]
        finally:
            await network.close()
            await sim.shutdown()
            sim.recorder.close()
        failures = ([self.error] if self.error else []) + [
            f"{f.actor}: {f.error} while handling {f.message}" for f in sim.system.failures]
        return Ending(network.audit.delivered_ids, counts, links, sim.steps,
                      self._shared_steps(end_s), failures)

    def close_files(self) -> None:
        """Hand what was recorded to the files (a run stopped by another region's failure)."""
        self.sim.recorder.close()

    def _shared_steps(self, end_s: float) -> int:
        """Timers every region fires: samples, link-state rounds, outages' edges."""
        edges = [o.at_s for o in self.scenario.outages] + [
            o.at_s + o.for_s for o in self.scenario.outages if o.for_s is not None]
        return self.network.shared_fired + sum(1 for at_s in edges if at_s <= end_s)

    def _add(self, readings: Readings) -> None:
        for round_no, reading in readings:
            self.network.km_network.add_reading(round_no, reading)

    def _exchange(self) -> Exchange:
        return Exchange(self.outbox.take(), self.network.km_network.take_readings(),
                        self.clock.next_time())


def _delivery(ref: ActorRef[Any], message: object) -> Callable[[], None]:
    return lambda: ref.tell(message)
