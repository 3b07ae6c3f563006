"""``run_scenario.py report DIR``: a run's summary, plots and verdicts rebuilt from its files.

A run writes ``scenario.yaml``, ``metrics.csv`` and ``events.jsonl`` as it goes (flushed at least
every second), so even a run that was killed leaves them. Rebuilding reads them back into a
recorder, row by row (per-request events are only counted, as during the run), and reports as
the run itself would have, without the books of live actors: no link books, and the audit of
key stores and senders is "not audited". A last line cut short by the kill is tolerated, and
repaired: the file is truncated to its last whole line.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Iterator

from nodes.run.expect import PER_REQUEST_KINDS
from nodes.run.harness import RunOutcome, report_files
from nodes.run.scenario import ScenarioError, load_scenario
from simulator import Recorder


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
    recorder = Recorder()
    recorder.summarise(*PER_REQUEST_KINDS)
    for row in csv.reader(whole_lines(out_dir / "metrics.csv", notes)):
        if row == ["t_s", "node", "metric", "value"]:
            continue
        t_s, node, metric, value = row
        recorder.sample(float(t_s), node, metric, float(value))
    for line in whole_lines(out_dir / "events.jsonl", notes):
        event = json.loads(line)
        recorder.event(event["t_s"], event["kind"], event["node"], **event["data"])
    stopped_s = recorder.last_t_s()
    return report_files(scenario, recorder, out_dir, {}, [], stopped_s,
                        early=stopped_s < scenario.duration_s, rebuilt=True), notes


def whole_lines(path: Path, notes: list[str]) -> Iterator[str]:
    """The file's complete lines; a torn last line is cut off the file, and noted."""
    if not path.is_file():
        raise RebuildError(f"{path} is missing")
    with path.open("rb+") as handle:
        data = handle.read()
        end = data.rfind(b"\n") + 1
        if end < len(data):
            handle.truncate(end)
            notes.append(f"{path.name}: dropped a torn last line ({len(data) - end} bytes)")
    for raw in data[:end].decode("utf-8").splitlines():
        if raw:
            yield raw
