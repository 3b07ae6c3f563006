"""Run a scenario from start to verdict: build, run, record, draw, check.

Writes to the output folder: ``scenario.yaml`` (the scenario as run), ``metrics.csv`` and
``events.jsonl`` as rows are recorded (byte-identical for the same scenario and seed; flushed at
least every second, so a killed run leaves them), ``plots/*.png``, ``summary.json`` /
``summary.txt``, and ``state/`` with each LKM's SQLite file as the run left it.
"""

from __future__ import annotations

import asyncio
import gc
import json
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping

from nodes.keynode import TlsFiles
from nodes.run.builder import Network, clear_state
from nodes.run.control import OutageControl
from nodes.run.expect import (
    PER_REQUEST_KINDS,
    ExpectationResult,
    evaluate,
    not_audited,
    not_evaluated,
)
from nodes.run.htmlreport import VERDICTS, write_html
from nodes.run.linkplots import format_links_table
from nodes.run.report import format_exposure_table, format_summary_table, write_report
from nodes.run.scenario import Scenario, write_scenario
from nodes.server import admin_notice
from nodes.traffic import OUTAGE_METHOD, TraceEntry, TraceWriter
from simulator import ClockError, Progress, Recorder, Simulation, Stalled

MAX_PRINTED_ROWS = 40
MAX_PRINTED_FAILURES = 10
STALL_S = 60.0  # wall seconds without any progress before a virtual run is declared hung


@dataclass(frozen=True, slots=True)
class RunOutcome:
    out_dir: Path
    summary: dict[str, Any]
    results: tuple[ExpectationResult, ...]
    actor_failures: tuple[str, ...]
    wall_s: float  # building the network and simulating (not the report)
    steps: int
    setup_s: float = 0.0  # of wall_s: building the network (registration fills every pool)

    @property
    def exit_code(self) -> int:
        passed = all(r.passed is not False for r in self.results) and not self.actor_failures
        return 0 if passed else 1


async def run(scenario: Scenario, out_dir: Path, progress: Progress | None = None) -> RunOutcome:
    """Run a scenario on its own clock to its end, and report."""
    return await _execute(scenario, out_dir, scenario.clock,
                          lambda sim: sim.run(scenario.duration_s, progress))


async def serve(scenario: Scenario, out_dir: Path, record: Path | None = None,
                announce: Callable[[str], Any] = print,
                stop: asyncio.Event | None = None,
                ready: Callable[[Network, OutageControl], None] | None = None,
                tls: Mapping[str, TlsFiles] | None = None) -> RunOutcome:
    """Run a scenario in wall-clock time with its LKMs open to external clients, until its
    duration ends or ``stop`` is set (SIGINT/SIGTERM set it, when served from the main
    thread), then report as for any run. ``ready`` gets the network once every LKM answers,
    with the control that injects outages into it. ``tls`` serves the LKMs it names over
    mutual TLS with those files."""
    stop = stop or asyncio.Event()
    writer = TraceWriter(record) if record is not None else None
    signals = (signal.SIGINT, signal.SIGTERM) \
        if threading.current_thread() is threading.main_thread() else ()

    async def until_stopped(sim: Simulation) -> None:
        loop = asyncio.get_running_loop()
        for signum in signals:
            loop.add_signal_handler(signum, stop.set)
        announce(f"serving {scenario.name} in wall-clock time (x{scenario.time_scale:g}); "
                 "Ctrl-C writes the results")
        waiter = asyncio.ensure_future(stop.wait())
        runner = asyncio.ensure_future(sim.run(scenario.duration_s))
        try:
            await asyncio.wait([waiter, runner], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (waiter, runner):
                task.cancel()
            await asyncio.gather(waiter, runner, return_exceptions=True)
            for signum in signals:
                loop.remove_signal_handler(signum)

    def show(network: Network) -> None:
        for lkm_id, node in network.nodes.items():
            announce(f"  {lkm_id}: {node.url}  (KM {network.directory.km_of(lkm_id)})")
        for notice in sorted({admin_notice(node.config) for node in network.nodes.values()}):
            announce(f"  {notice}")

        def journal(phase: str, outage_id: str, outage: Mapping[str, Any]) -> None:
            """An injected outage goes into the trace, which replays it at the same time."""
            if writer is not None:
                writer.write(TraceEntry(network.sim.clock.now(), "", OUTAGE_METHOD,
                                        f"/{phase}/{outage_id}", None, dict(outage), 0))

        if ready is not None:
            ready(network, OutageControl(network.sim, network, scenario, journal))

    try:
        return await _execute(scenario, out_dir, "wall", until_stopped, writer, show,
                              serving=True, tls=tls)
    finally:
        if writer is not None:
            writer.close()


async def _start_without_collecting(network: Network) -> None:
    """Build the network with the cyclic garbage collector paused, then collect once and freeze
    what was built: the actors, stores and directories of a large network live for the whole
    run, and every full collection walked them again (at 1,000 LKMs, millions of objects, a
    pass of seconds each, 18 % of a profile of the run). Frozen objects are still freed by
    reference counting; :func:`gc.unfreeze` once the network has closed hands them back."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        await network.start()
    finally:
        if enabled:
            gc.enable()
    gc.collect()
    gc.freeze()


async def _execute(scenario: Scenario, out_dir: Path, clock: str,
                   drive: Callable[[Simulation], Awaitable[None]],
                   trace: TraceWriter | None = None,
                   started: Callable[[Network], None] | None = None,
                   stall_s: float = STALL_S, serving: bool = False,
                   tls: Mapping[str, TlsFiles] | None = None) -> RunOutcome:
    """Build, drive and report. A run samples its pools once more when it stops (every pool
    then has a row at the end: decision 63), and a served run stopped before its duration
    reports the expectations that need the whole duration as not evaluated."""
    began = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    state_dir = out_dir / "state"
    clear_state(scenario, state_dir)  # this run's files only: --out never loses anything else
    sim = Simulation(scenario.seed, clock, scenario.time_scale, stall_s=stall_s)
    sim.recorder.summarise(*PER_REQUEST_KINDS)
    sim.recorder.stream_to(out_dir)  # rows reach the files as they come (flushed each second)
    write_scenario(scenario, out_dir)  # what `run_scenario.py report DIR` rebuilds from
    flusher = asyncio.ensure_future(_flush_every_second(sim)) if clock == "wall" else None
    network = Network(scenario, sim, state_dir, trace, serving=clock == "wall", tls=tls)
    setup_s = 0.0
    engine_error: str | None = None
    audit: dict[str, int] = {}
    links: list[dict[str, Any]] = []
    try:
        try:
            await _start_without_collecting(network)
            setup_s = time.perf_counter() - began
            if started is not None:
                started(network)
            await drive(sim)
            await sim.settle()
            await network.sample_pools(closing=True)
        except (Stalled, ClockError) as error:  # the run ends here; what it recorded stays
            engine_error = f"engine: {type(error).__name__}: {error}"
        else:
            audit = await network.audit_counts()
            links = await network.link_accounts()
    except BaseException:
        gc.unfreeze()
        raise
    finally:
        await network.close()
        await sim.shutdown()
        if flusher is not None:
            flusher.cancel()
        sim.recorder.close()
    # what the run built may go before the report, which needs only the recorder's files (at
    # 1,000 LKMs the report's tables and the network's leftovers made the run's peak)
    del network
    gc.unfreeze()
    gc.collect()
    return _report(scenario, sim, audit, out_dir, time.perf_counter() - began, setup_s,
                   engine_error, links, early=serving)


async def _flush_every_second(sim: Simulation) -> None:
    """In wall-clock time, rows recorded in a quiet second still reach the files."""
    while True:
        await asyncio.sleep(1.0)
        sim.recorder.flush()


def _report(scenario: Scenario, sim: Simulation, audit: dict[str, int], out_dir: Path,
            wall_s: float, setup_s: float, engine_error: str | None = None,
            links: list[dict[str, Any]] | None = None, early: bool = False) -> RunOutcome:
    failures = tuple([engine_error] if engine_error else []) + tuple(
        f"{f.actor}: {f.error} while handling {f.message}" for f in sim.system.failures)
    return report_files(scenario, sim.recorder, out_dir, audit, links or [], sim.clock.now(),
                        early, failures, sim.steps, wall_s, setup_s)


def report_files(scenario: Scenario, recorder: Recorder, out_dir: Path, audit: dict[str, int],
                 links: list[dict[str, Any]], stopped_s: float, early: bool,
                 failures: tuple[str, ...] = (), steps: int = 0, wall_s: float = 0.0,
                 setup_s: float = 0.0, rebuilt: bool = False) -> RunOutcome:
    """Plots, summary.json/txt and the expectations' verdicts from what ``recorder`` holds (a
    run's, or one rebuilt from its files). Stopped ``early`` (before the scenario's duration),
    the expectations that need the whole duration are not evaluated."""
    write_report(recorder, scenario.name, out_dir, links=links)
    results = tuple(evaluate(scenario.expect, recorder, audit))
    if early and stopped_s < scenario.duration_s:
        results = tuple(not_evaluated(results, scenario.expect, stopped_s, scenario.duration_s))
    if rebuilt:
        results = tuple(not_audited(results, scenario.expect))
    summary = json.loads((out_dir / "summary.json").read_text())
    summary.update({
        "seed": scenario.seed, "steps": steps,
        "simulated_s": round(min(stopped_s, scenario.duration_s), 6),
        "audit": audit, "actor_failures": list(failures),
        "expectations": [{"name": r.name, "passed": r.passed, "figure": r.figure}
                         for r in results]})
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    outcome = RunOutcome(out_dir, summary, results, failures, wall_s, steps, setup_s)
    notes = note_lines(outcome)
    with (out_dir / "summary.txt").open("a", encoding="utf-8") as text:
        text.write("\n" + "\n".join(notes + expectation_lines(outcome)) + "\n")
    write_html(out_dir, summary, notes)
    return outcome


def verdict_lines(outcome: RunOutcome) -> list[str]:
    """A replay's fidelity, the audit line, failures of actors, and each expectation's verdict
    with its figure."""
    return note_lines(outcome) + expectation_lines(outcome)


def note_lines(outcome: RunOutcome) -> list[str]:
    """A replay's fidelity, the audit line and failures of actors."""
    audit = outcome.summary["audit"]
    lines: list[str] = []
    if replay := outcome.summary.get("replay"):
        lines.append("replay: {requests} requests replayed, {same_status} got the recorded "
                     "status, {different_status} a different one".format(**replay))
    lines += ["mails sent {mails_sent}, read and matched {mails_received}, key IDs reused "
             "{reused_key_ids}, keys mismatched {mismatched_keys}".format(**audit) if audit
             else "not audited: the run ended early, or was rebuilt from its files"]
    for failure in outcome.actor_failures[:MAX_PRINTED_FAILURES]:
        lines.append(f"FAILURE  {failure}")
    if len(outcome.actor_failures) > MAX_PRINTED_FAILURES:
        more = len(outcome.actor_failures) - MAX_PRINTED_FAILURES
        lines.append(f"... {more} more failures in summary.json (actor_failures)")
    return lines


def expectation_lines(outcome: RunOutcome) -> list[str]:
    return [f"{VERDICTS[r.passed]}  {r.name}: {r.figure}" for r in outcome.results]


def format_outcome(outcome: RunOutcome) -> str:
    """The summary table, the audit, each expectation's verdict, and where the files are."""
    table = format_summary_table(outcome.summary).rstrip().splitlines()
    if len(table) > MAX_PRINTED_ROWS:  # a city has thousands of pools: the file has them all
        table = table[:3] + [f"... {len(table) - 6} more rows in summary.txt ..."] + table[-3:]
    lines = [*table, ""]
    links = format_links_table(outcome.summary.get("links", [])).rstrip().splitlines()
    if len(links) > MAX_PRINTED_ROWS:
        links = links[:MAX_PRINTED_ROWS - 3] + [f"... {len(links) - MAX_PRINTED_ROWS + 3} more "
                                                "links in summary.txt ..."]
    if outcome.summary.get("links"):
        lines += [*links, ""]
    if outcome.summary.get("exposure"):
        lines += [*format_exposure_table(outcome.summary).rstrip().splitlines()[:MAX_PRINTED_ROWS],
                  ""]
    lines += verdict_lines(outcome)
    rate = outcome.summary["simulated_s"] / max(outcome.wall_s, 1e-9)
    if outcome.wall_s == 0.0:  # rebuilt from a run's files
        lines.append(f"rebuilt from the files: {outcome.summary['simulated_s']:.0f} s recorded")
    else:
        lines.append(f"simulated {outcome.summary['simulated_s']:.0f} s in "
                     f"{outcome.wall_s:.1f} s wall ({rate:,.0f} sim-s per wall-s, "
                     f"{outcome.steps} steps)")
    lines.append(f"results in {outcome.out_dir}/ (plots in {outcome.out_dir / 'plots'}/)")
    return "\n".join(lines)

