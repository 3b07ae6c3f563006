"""Sweep throughput: runs per minute on the `local` engine and on `ray` (a local Ray instance),
and the overhead per run against running the scenario directly, measured in one run.

    .venv/bin/python bench/sweep.py [--runs 8] [--jobs 2] [--repeat 3]

The scenario is `scenarios/outages/km_down_emergency.yaml` (two simulated days, one LKM),
varied over pool sizes and seeds. Three ways, alternating, `--repeat` times:
- direct: the runs one after another in this process (`asyncio.run(run(...))`), as a script
  would; the floor;
- local: `run_sweep(..., "local", jobs)`;
- ray: `run_sweep(..., "ray", jobs)`, Ray started for the sweep (its start-up included).
Each sweep starts from an empty folder. With `--jobs 1` the ratio sweep / direct is the
overhead per run (task shipping, files back, CSV, plots, report); with 2 jobs on 2 CPUs the
sweeps gain from running two at once. Medians, and ratios of medians, of this one run; writes
bench/results/sweep.json and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import RESULTS, ROOT, commit, machine, table  # noqa: E402
from nodes.run import parse_scenario, run  # noqa: E402
from nodes.sweep import load_sweep, run_sweep  # noqa: E402


def sweep_file(folder: Path, runs: int) -> Path:
    seeds = max(1, runs // 2)
    path = folder / "bench_sweep.yaml"
    path.write_text(json.dumps({
        "scenario": str(ROOT / "scenarios" / "outages" / "km_down_emergency.yaml"),
        "vary": {"defaults.pool_size": [200, 300]}, "seeds": seeds}))
    return path


def direct(sweep_path: Path, folder: Path) -> float:
    sweep = load_sweep(sweep_path)
    began = time.perf_counter()
    for index, spec in enumerate(sweep.runs()):
        asyncio.run(run(parse_scenario(spec.scenario), folder / f"direct-{index}"))
    return time.perf_counter() - began


def swept(sweep_path: Path, folder: Path, engine: str, jobs: int) -> float:
    began = time.perf_counter()
    outcome = run_sweep(load_sweep(sweep_path), folder / engine, engine, jobs)
    assert outcome.exit_code == 0 and outcome.ran == len(outcome.rows), outcome.rows
    return time.perf_counter() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    times: dict[str, list[float]] = {"direct": [], "local": [], "ray": []}
    with tempfile.TemporaryDirectory(prefix="qkdsim-bench-sweep-") as tmp:
        path = sweep_file(Path(tmp), args.runs)
        runs = len(load_sweep(path).runs())
        for attempt in range(args.repeat):
            for way in times:
                folder = Path(tmp) / f"{way}-{attempt}"
                wall = direct(path, folder) if way == "direct" else \
                    swept(path, folder, way, args.jobs)
                times[way].append(wall)
                shutil.rmtree(folder, ignore_errors=True)
                print(f"{way} {attempt + 1}/{args.repeat}: {wall:.1f} s", file=sys.stderr)
    median = {way: statistics.median(walls) for way, walls in times.items()}
    per_run = {way: median[way] / runs for way in median}
    rows = [[way, str(runs), f"{median[way]:.1f}", f"{60 * runs / median[way]:.1f}",
             f"{per_run[way]:.2f}", f"{median[way] / median['direct']:.2f}"] for way in median]
    print(table(["way", "runs", "median s", "runs/min", "s/run", "x direct"], rows))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "sweep.json").write_text(json.dumps({
        "benchmark": "sweep", "commit": commit(), "machine": machine(), "runs": runs,
        "jobs": args.jobs, "repeat": args.repeat, "times_s": times, "median_s": median,
        "runs_per_min": {w: 60 * runs / m for w, m in median.items()},
        "ratio_to_direct": {w: m / median["direct"] for w, m in median.items()}},
        indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
