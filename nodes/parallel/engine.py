"""A partitioned run: one scenario split into regions, advanced in conservative windows.

The KM graph is split by :func:`nodes.run.plan_for` (decision 67); each region
(:class:`~nodes.parallel.region.Region`) runs its part on its own virtual clock, in this
process (``engine="local"``) or in a Ray actor (``engine="ray"``, a local instance, or the
cluster at ``address``). The engine repeats a window:

1. the window starts at the earliest timer any region has due, or the earliest letter
   waiting, and lasts the lookahead (the least hop delay of a cut link, no longer than a
   link-state period): nothing sent inside it can arrive inside it;
2. every region takes the letters and link-state readings addressed to it, and fires its
   timers due before the window's end (in parallel, on Ray);
3. the letters they sent are routed to their receivers' regions for the next window.

Each region records into ``regions/region-N/``; at the end the rows are merged, instant by
instant in the order of their text (decision 70), into the usual ``metrics.csv`` and
``events.jsonl``, and the report is drawn from them as for any run: the same bytes for any
number of regions. A region that fails, dies or stops answering fails the run with
:class:`RegionFailed`, naming the region and the simulated time; what was recorded is merged
and marked partial (``PARTIAL``, and ``"partial": true`` in ``summary.json``).
"""

from __future__ import annotations

import asyncio
import csv
import heapq
import json
import math
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterator, Sequence

from nodes.parallel.region import Ending, Exchange, Readings, Region
from nodes.run import (
    PER_REQUEST_KINDS,
    ReplayTraffic,
    RunOutcome,
    Scenario,
    ScenarioError,
    clear_state,
    plan_for,
    report_files,
    write_scenario,
)
from simulator import (
    CSV_HEADER,
    EVENTS_FILE,
    SAMPLES_FILE,
    Letter,
    Recorder,
    repair,
    whole_lines,
)

ANSWER_S = 600.0  # wall seconds a region may take over one step before the run fails
ENGINES = ("local", "ray")


class PartitionError(RuntimeError):
    """A partitioned run could not go on (its message says why)."""


class RegionFailed(PartitionError):
    """A region failed, died or stopped answering: the run stops, its outputs are partial."""


class EngineError(PartitionError):
    """The engine could not start (Ray missing, or no cluster at the address)."""


Call = Callable[..., Awaitable[Any]]


@dataclass
class EngineStats:
    """What the windows cost (``bench/partitioned.py`` reads these)."""

    windows: int = 0
    letters: int = 0  # messages between regions
    window_s: float = 0.0  # wall seconds of every window, barrier to barrier
    slowest_s: float = 0.0  # of which the slowest region worked, summed over windows
    idle_s: float = 0.0  # region-seconds spent waiting at barriers (for the slowest, the round)
    setup_s: float = 0.0
    finish_s: float = 0.0


async def run_partitioned(scenario: Scenario, out_dir: Path, partitions: int,
                          engine: str = "local", address: str | None = None,
                          answer_s: float = ANSWER_S,
                          progress: Callable[[float, float], None] | None = None,
                          stats: EngineStats | None = None) -> RunOutcome:
    """Run ``scenario`` split into ``partitions`` regions; see the module docstring."""
    began = time.perf_counter()
    problems = [f"traffic.{i}.replay: a partitioned run cannot replay a trace (its requests "
                "go to every LKM at once); run it in one process"
                for i, flow in enumerate(scenario.traffic) if isinstance(flow, ReplayTraffic)]
    if scenario.clock != "virtual":
        problems.append("clock: a partitioned run needs virtual time")
    if engine not in ENGINES:
        problems.append(f"engine: '{engine}' is not one of {', '.join(ENGINES)}")
    if problems:
        raise ScenarioError(problems)
    plan = plan_for(scenario, partitions)
    window_s = plan.lookahead_s
    if scenario.routing != "fewest_hops" and len(plan.regions) > 1:  # a round's reading must
        window_s = min(window_s, scenario.routing_update_s)  # reach the others in time
    out_dir.mkdir(parents=True, exist_ok=True)
    clear_state(scenario, out_dir / "state")
    shutil.rmtree(out_dir / "regions", ignore_errors=True)
    write_scenario(scenario, out_dir)
    data = scenario.model_dump(mode="json", by_alias=True, exclude_unset=True)
    region_of = plan.region_of()
    owner = dict(region_of)
    km_of = {lkm.id: lkm.km for lkm in scenario.lkms}
    owner.update((sae.id, region_of[km_of[sae.lkm]]) for sae in scenario.saes)
    calls, stop = await _regions(engine, address, data, plan.regions, str(out_dir))
    driver = _Driver(plan.regions, calls, owner, answer_s, stats or EngineStats())
    try:
        return await driver.drive(scenario, out_dir, window_s, began, progress)
    finally:
        stop()


class _Driver:
    def __init__(self, regions: Sequence[Sequence[str]], calls: list[Call],
                 owner: dict[str, int], answer_s: float, stats: EngineStats) -> None:
        self.regions = regions
        self.calls = calls
        self.stats = stats
        self.owner = owner
        self.answer_s = answer_s
        self.now_s = 0.0

    async def drive(self, scenario: Scenario, out_dir: Path, window_s: float, began: float,
                    progress: Callable[[float, float], None] | None) -> RunOutcome:
        end_s = scenario.duration_s
        try:
            steps = await self._all("start_links")
            readings = [r for ex in steps for r in ex.readings]
            steps = await self._all("start_users", lambda i: (readings,))
            setup_s = self.stats.setup_s = time.perf_counter() - began
            letters, readings = self._route(steps)
            while True:
                due = [ex.next_s for ex in steps if ex.next_s is not None]
                due += [letter.key[0] for mail in letters for letter in mail]
                if not due or min(due) > end_s:
                    break
                self.now_s = min(due)
                stop_s = min(self.now_s + window_s, math.nextafter(end_s, math.inf))
                sent, got = letters, readings
                started = time.perf_counter()
                steps = await self._all("window", lambda i: (stop_s, sent[i], got))
                self._count(steps, time.perf_counter() - started)
                letters, readings = self._route(steps)
                if progress is not None:
                    progress(self.now_s, end_s)
            self.now_s = end_s
            started = time.perf_counter()
            endings: list[Ending] = await self._all("finish", lambda i: (end_s,))
            self.stats.finish_s = time.perf_counter() - started
        except RegionFailed as error:
            await self._close_quietly()
            _merge(out_dir, len(self.regions))
            _mark_partial(out_dir, str(error), self.now_s)
            raise
        if failed := [f for ending in endings for f in ending.failures if f.startswith("engine")]:
            _merge(out_dir, len(self.regions))
            _mark_partial(out_dir, failed[0], self.now_s)
            raise RegionFailed(failed[0])
        _merge(out_dir, len(self.regions))
        shutil.rmtree(out_dir / "regions")
        recorder = Recorder.from_files(out_dir, *PER_REQUEST_KINDS)
        return report_files(scenario, recorder, out_dir, _audit(endings), _links(scenario, endings),
                            end_s, False, tuple(f for e in endings for f in e.failures),
                            _steps(endings), time.perf_counter() - began, setup_s)

    async def _all(self, method: str, args: Callable[[int], tuple[Any, ...]] = lambda i: (),
                   ) -> list[Any]:
        """Call ``method`` on every region at once; the first that fails, dies or does not
        answer within ``answer_s`` fails the run, named with the simulated time."""
        tasks = [asyncio.ensure_future(call(method, *args(i))) for i, call in
                 enumerate(self.calls)]
        try:
            done, pending = await asyncio.wait(tasks, timeout=self.answer_s,
                                               return_when=asyncio.FIRST_EXCEPTION)
            for i, task in enumerate(tasks):
                error = task.exception() if task in done else None
                if error is not None:
                    died = "Actor" in type(error).__name__  # Ray: the actor's process is gone
                    raise self._failed(i, f"{'died' if died else 'failed'} ({_why(error)})")
            if pending:
                i = tasks.index(next(iter(pending)))
                raise self._failed(i, f"did not answer within {self.answer_s:g} s of wall time")
            return [task.result() for task in tasks]
        finally:
            for task in tasks:
                task.cancel()

    def _count(self, steps: list[Exchange], wall_s: float) -> None:
        stats = self.stats
        stats.windows += 1
        stats.letters += sum(len(ex.letters) for ex in steps)
        stats.window_s += wall_s
        stats.slowest_s += max(ex.busy_s for ex in steps)
        stats.idle_s += sum(wall_s - ex.busy_s for ex in steps)

    def _failed(self, index: int, what: str) -> RegionFailed:
        kms = self.regions[index]
        shown = ", ".join(kms[:4]) + (f" and {len(kms) - 4} more" if len(kms) > 4 else "")
        return RegionFailed(f"region {index} (KMs {shown}) {what} at t={self.now_s:.6f} s of "
                            "simulated time; the outputs are partial")

    def _route(self, steps: list[Exchange]) -> tuple[list[list[Letter]], Readings]:
        letters: list[list[Letter]] = [[] for _ in self.regions]
        for ex in steps:
            for letter in ex.letters:
                letters[self.owner[letter.to]].append(letter)
        return letters, [r for ex in steps for r in ex.readings]

    async def _close_quietly(self) -> None:
        for call in self.calls:
            try:
                await asyncio.wait_for(call("close_files"), 10.0)
            except BaseException:  # a dead region has nothing left to close
                pass


def _why(error: BaseException | None) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]


async def _regions(engine: str, address: str | None, data: dict[str, Any],
                   regions: Sequence[Sequence[str]], out_dir: str
                   ) -> tuple[list[Call], Callable[[], None]]:
    """The regions, built; a call for each (method name, args -> result) and a stop."""
    if engine == "local":
        built = [Region(data, i, tuple(kms), out_dir) for i, kms in enumerate(regions)]

        def local(region: Region) -> Call:
            return lambda method, *args: getattr(region, method)(*args)

        def close_local() -> None:
            for region in built:
                region.close_files()

        return [local(region) for region in built], close_local
    from nodes.parallel.on_ray import ray_regions

    return ray_regions(address, data, regions, out_dir)


def _merge(out_dir: Path, count: int) -> None:
    """The regions' rows into the run's two files, instant by instant in text order (what a
    region's file already is), as one process writes them (decision 70)."""
    folders = [out_dir / "regions" / f"region-{i}" for i in range(count)]
    for folder in folders:
        for name in (SAMPLES_FILE, EVENTS_FILE):
            if (folder / name).exists():
                repair(folder / name)
    with (out_dir / SAMPLES_FILE).open("w", encoding="utf-8", newline="") as out:
        out.write(",".join(CSV_HEADER) + "\n")
        out.writelines(heapq.merge(*(_lines(f / SAMPLES_FILE, True) for f in folders),
                                   key=_sample_key))
    with (out_dir / EVENTS_FILE).open("w", encoding="utf-8", newline="") as out:
        out.writelines(heapq.merge(*(_lines(f / EVENTS_FILE, False) for f in folders),
                                   key=_event_key))


def _lines(path: Path, header: bool) -> Iterator[str]:
    if not path.exists():
        return
    lines = whole_lines(path)
    if header:
        next(lines, None)
    yield from lines


def _sample_key(line: str) -> tuple[float, tuple[str, ...]]:
    """As a Sink sorts an instant's samples: by the row's fields (a node may need quoting)."""
    row = tuple(next(csv.reader([line])))
    return float(row[0]), row


def _event_key(line: str) -> tuple[float, str]:
    return float(line.rsplit('"t_s":', 1)[1].rstrip("}\n")), line


def _mark_partial(out_dir: Path, message: str, now_s: float) -> None:
    (out_dir / "PARTIAL").write_text(message + "\n", encoding="utf-8")
    summary = {"partial": True, "failure": message, "simulated_s": round(now_s, 6)}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")


def _audit(endings: Sequence[Ending]) -> dict[str, int]:
    delivered: Counter[str] = Counter()
    audit: dict[str, int] = {}
    stored_twice = 0
    for ending in endings:
        delivered.update(ending.delivered_ids)
        own = sum(1 for n in ending.delivered_ids.values() if n > 1)
        stored_twice += ending.counts["reused_key_ids"] - own
        for key, value in ending.counts.items():
            audit[key] = audit.get(key, 0) + value
    audit["reused_key_ids"] = sum(1 for n in delivered.values() if n > 1) + stored_twice
    return audit


def _links(scenario: Scenario, endings: Sequence[Ending]) -> list[dict[str, Any]]:
    books = {link_id: account for ending in endings for link_id, account in ending.links}
    return [books[link.id] for link in scenario.links]


def _steps(endings: Sequence[Ending]) -> int:
    """Timers fired, as one clock would count them: each region's, the timers every region
    fires (samples, link-state rounds, outages) once."""
    return sum(e.steps for e in endings) - (len(endings) - 1) * endings[0].shared_steps
