"""``run_scenario.py report DIR``: a run's summary, plots and verdicts rebuilt from its files.

A run writes ``scenario.yaml``, ``metrics.csv`` and ``events.jsonl`` as it goes (flushed at least
every second), so even a run that was killed leaves them. Rebuilding reads them back into a
recorder that answers from them, as the run's own recorder does once it has closed them (one
pass for the totals of the events; per-request events are only counted), and reports as the
run itself would have, without the books of live actors: no link books, and the audit of
key stores and senders is "not audited". A last line cut short by the kill is tolerated, and
repaired: the file is truncated to its last whole line (only its tail is read for that).
"""

from __future__ import annotations

from pathlib import Path

from nodes.run.expect import PER_REQUEST_KINDS
from nodes.run.harness import RunOutcome, report_files
from nodes.run.scenario import ScenarioError, load_scenario
from simulator import EVENTS_FILE, SAMPLES_FILE, Recorder, repair


class RebuildError(ValueError):
    """The folder holds no run to rebuild (the message says what is missing)."""


def rebuild(out_dir: Path) -> tuple[RunOutcome, list[str]]:
    """The run's outcome, rebuilt from the files in ``out_dir``, and notes on what was
    repaired."""
    try:
        scenario = load_scenario(out_dir / "scenario.yaml")
    except ScenarioError as error:
        raise RebuildError("; ".join(error.errors)) from None
    notes: list[str] = []
    for name in (SAMPLES_FILE, EVENTS_FILE):
        if not (out_dir / name).is_file():
            raise RebuildError(f"{out_dir / name} is missing")
        if cut := repair(out_dir / name):
            notes.append(f"{name}: dropped a torn last line ({cut} bytes)")
    recorder = Recorder.from_files(out_dir, *PER_REQUEST_KINDS)
    stopped_s = recorder.last_t_s()
    return report_files(scenario, recorder, out_dir, {}, [], stopped_s,
                        early=stopped_s < scenario.duration_s, rebuilt=True), notes
