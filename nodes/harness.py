"""Run a scenario from start to verdict: build, run, record, draw, check.

Writes to the output folder: ``metrics.csv`` and ``events.jsonl`` (byte-identical for the same
scenario and seed), ``plots/*.png``, ``summary.json`` / ``summary.txt``, and ``state/`` with each
LKM's SQLite file as the run left it.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nodes.network import Network
from simulator.expect import ExpectationResult, evaluate
from simulator.report import format_summary_table, write_report
from simulator.runtime import ProgressFn, Simulation
from simulator.scenario import Scenario


MAX_PRINTED_ROWS = 40


@dataclass(frozen=True, slots=True)
class RunOutcome:
    out_dir: Path
    summary: dict[str, Any]
    results: tuple[ExpectationResult, ...]
    actor_failures: tuple[str, ...]
    wall_s: float
    steps: int

    @property
    def exit_code(self) -> int:
        passed = all(r.passed for r in self.results) and not self.actor_failures
        return 0 if passed else 1


async def run(scenario: Scenario, out_dir: Path, progress: ProgressFn | None = None) -> RunOutcome:
    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    state_dir = out_dir / "state"
    shutil.rmtree(state_dir, ignore_errors=True)
    state_dir.mkdir()
    sim = Simulation(scenario.seed, scenario.clock, scenario.time_scale)
    network = Network(scenario, sim, state_dir)
    try:
        await network.start()
        await sim.run(scenario.duration_s, progress)
        audit = await network.audit_counts()
    finally:
        await network.close()
        await sim.shutdown()
    return _report(scenario, sim, audit, out_dir, time.perf_counter() - started)


def _report(scenario: Scenario, sim: Simulation, audit: dict[str, int], out_dir: Path,
            wall_s: float) -> RunOutcome:
    recorder = sim.recorder
    recorder.write_csv(out_dir / "metrics.csv")
    recorder.write_jsonl(out_dir / "events.jsonl")
    write_report(recorder, scenario.name, out_dir)
    results = tuple(evaluate(scenario.expect, recorder, audit))
    failures = tuple(f"{f.actor}: {f.error} while handling {f.message}"
                     for f in sim.system.failures)
    summary = json.loads((out_dir / "summary.json").read_text())
    summary.update({
        "seed": scenario.seed, "simulated_s": scenario.duration_s, "steps": sim.steps,
        "audit": audit, "actor_failures": list(failures),
        "expectations": [{"name": r.name, "passed": r.passed, "figure": r.figure}
                         for r in results]})
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return RunOutcome(out_dir, summary, results, failures, wall_s, sim.steps)


def format_outcome(outcome: RunOutcome) -> str:
    """The summary table, the audit, each expectation's verdict, and where the files are."""
    table = format_summary_table(outcome.summary).rstrip().splitlines()
    if len(table) > MAX_PRINTED_ROWS:  # a city has thousands of pools: the file has them all
        table = table[:3] + [f"... {len(table) - 6} more rows in summary.txt ..."] + table[-3:]
    lines = [*table, ""]
    audit = outcome.summary["audit"]
    lines.append("mails sent {mails_sent}, read and matched {mails_received}, key IDs reused "
                 "{reused_key_ids}, keys mismatched {mismatched_keys}".format(**audit))
    for failure in outcome.actor_failures:
        lines.append(f"ACTOR FAILURE  {failure}")
    for result in outcome.results:
        lines.append(f"{'PASS' if result.passed else 'FAIL'}  {result.name}: {result.figure}")
    rate = outcome.summary["simulated_s"] / max(outcome.wall_s, 1e-9)
    lines.append(f"simulated {outcome.summary['simulated_s']:.0f} s in {outcome.wall_s:.1f} s wall "
                 f"({rate:,.0f} sim-s per wall-s, {outcome.steps} steps)")
    lines.append(f"results in {outcome.out_dir}/ (plots in {outcome.out_dir / 'plots'}/)")
    return "\n".join(lines)

