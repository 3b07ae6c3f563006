"""Run a sweep: every (variant, seed) not already done in ``--out``, on an engine, then the
table, the plots and the report.

``OUT/runs/<run_id>/`` holds each run's usual outputs and ``sweep_run.json`` (its parameters,
seed, status and message), written last: a run with that file and a status other than "error"
is done, and a sweep run again into the same folder skips it (resume). ``OUT/sweep.csv`` is
tidy, one row per run; ``OUT/plots/`` has one plot per collected figure and varied parameter;
``OUT/report.html`` shows both.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nodes.sweep.engines import run_tasks
from nodes.sweep.outputs import write_outputs
from nodes.sweep.spec import RunSpec, Sweep
from nodes.sweep.task import COMPLETE, Result, Task, figures

DONE_FILE = "sweep_run.json"


@dataclass(frozen=True)
class SweepOutcome:
    out_dir: Path
    rows: list[dict[str, Any]]
    ran: int
    skipped: int

    @property
    def exit_code(self) -> int:
        """0 when every run completed (whatever its expectations said), 1 when one did not."""
        return 0 if all(row["status"] in COMPLETE for row in self.rows) else 1


def run_sweep(sweep: Sweep, out_dir: Path, engine: str = "local", jobs: int | None = None,
              address: str | None = None, progress: Callable[[int, int], None] | None = None
              ) -> SweepOutcome:
    runs = sweep.runs()
    by_id = {spec.run_id: spec for spec in runs}
    rows: dict[str, dict[str, Any]] = {}
    todo: list[Task] = []
    crash_once = os.environ.get("QKDSIM_SWEEP_CRASH_ONCE")  # fault injection (task.execute)
    for spec in runs:
        done = _done(out_dir / "runs" / spec.run_id)
        if spec.invalid is not None:
            rows[spec.run_id] = _row(sweep, spec, "invalid", spec.invalid, None)
        elif done is not None and done["status"] in COMPLETE:
            rows[spec.run_id] = _row(sweep, spec, done["status"], done["message"],
                                     out_dir / "runs" / spec.run_id)
        else:
            todo.append(Task(spec.run_id, spec.scenario, crash_once))
    skipped = sum(1 for row in rows.values() if row["status"] != "invalid")
    total = len(todo)
    if progress is not None:
        progress(0, total)

    def finished(result: Result) -> None:
        spec = by_id[result.run_id]
        run_dir = _write_run(out_dir, spec, result)
        rows[spec.run_id] = _row(sweep, spec, result.status, result.message, run_dir)
        if progress is not None:
            progress(len(rows) - skipped - _invalid(rows), total)

    run_tasks(todo, engine, jobs or os.cpu_count() or 1, address, finished)
    ordered = [rows[spec.run_id] for spec in runs]
    write_outputs(sweep, ordered, out_dir)
    return SweepOutcome(out_dir, ordered, total, skipped)


def _invalid(rows: dict[str, dict[str, Any]]) -> int:
    return sum(1 for row in rows.values() if row["status"] == "invalid")


def _done(run_dir: Path) -> dict[str, Any] | None:
    try:
        done = json.loads((run_dir / DONE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return done if isinstance(done, dict) and "status" in done else None


def _write_run(out_dir: Path, spec: RunSpec, result: Result) -> Path:
    run_dir = out_dir / "runs" / spec.run_id
    if run_dir.exists():
        shutil.rmtree(run_dir)
    for name, data in result.files.items():
        path = run_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {"run_id": spec.run_id, "params": dict(spec.params), "seed": spec.seed,
              "status": result.status, "message": result.message}
    (run_dir / DONE_FILE).write_text(json.dumps(record, indent=2, sort_keys=True, default=str)
                                     + "\n")
    return run_dir


def _row(sweep: Sweep, spec: RunSpec, status: str, message: str, run_dir: Path | None
         ) -> dict[str, Any]:
    row: dict[str, Any] = {"run_id": spec.run_id, **dict(spec.params), "seed": spec.seed}
    summary = run_dir / "summary.json" if run_dir is not None else None
    if summary is not None and summary.is_file():
        row.update(figures(json.loads(summary.read_text()), sweep.collect))
    row.update(status=status, message=message)
    return row


def print_progress(done: int, total: int) -> None:
    """A progress bar on stderr: one line, redrawn in a terminal, a line per tenth otherwise."""
    width = 30
    filled = width * done // max(total, 1)
    line = f"sweep: {done}/{total} runs [{'#' * filled}{'.' * (width - filled)}]"
    if sys.stderr.isatty():
        print("\r" + line, end="\n" if done == total else "", file=sys.stderr, flush=True)
    elif done == total or done % max(1, total // 10) == 0:
        print(line, file=sys.stderr, flush=True)


def format_sweep(sweep: Sweep, outcome: SweepOutcome) -> str:
    """What a sweep did: runs by status, each run that did not complete, where the files are."""
    counts: dict[str, int] = {}
    for row in outcome.rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    lines = [f"sweep {sweep.name}: {len(outcome.rows)} runs ({outcome.ran} run now, "
             f"{outcome.skipped} already done): " +
             ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))]
    for row in outcome.rows:
        if row["status"] not in COMPLETE:
            params = ", ".join(f"{p}={row[p]}" for p in sweep.parameters)
            lines.append(f"  {row['status']}: {params}, seed {row['seed']}: {row['message']}")
    lines.append(f"results in {outcome.out_dir}/ (sweep.csv, plots/, report.html, runs/)")
    return "\n".join(lines)
