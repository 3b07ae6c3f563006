#!/usr/bin/env python3
"""Simulation speed: wall time, simulated seconds per wall second, events per second, peak RSS.

Each repetition runs in a fresh process (so peak RSS is that run's own); the table shows the
median of the repetitions and bench/results/sim_speed.json keeps every figure.

    python bench/sim_speed.py [--repeat 3] [SCENARIO.yaml ...]     (default: scenarios/quickstart.yaml)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def one_run(scenario_path: str) -> dict[str, float]:
    """Run one scenario in this process; return its figures."""
    sys.path.insert(0, str(ROOT))
    from nodes.harness import run
    from simulator.scenario import load_scenario

    scenario = load_scenario(scenario_path)
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        outcome = asyncio.run(run(scenario, Path(out)))
        wall_s = time.perf_counter() - started
        events = sum(1 for _ in open(Path(out) / "events.jsonl"))
    return {"wall_s": wall_s, "simulated_s": scenario.duration_s, "clock_steps": outcome.steps,
            "events": events, "mails": outcome.summary["audit"]["mails_sent"],
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "exit_code": outcome.exit_code}


def measure(scenario_path: str, repeat: int) -> dict[str, object]:
    runs = []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, __file__, "--one", scenario_path], cwd=ROOT,
                             capture_output=True, text=True, check=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    med = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    return {"scenario": scenario_path, "runs": runs, "median": {
        **med, "sim_s_per_wall_s": med["simulated_s"] / med["wall_s"],
        "events_per_wall_s": med["events"] / med["wall_s"],
        "steps_per_wall_s": med["clock_steps"] / med["wall_s"],
        "mails_per_wall_s": med["mails"] / med["wall_s"]}}


def commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                         text=True)
    return out.stdout.strip() or "unknown"


def table(results: list[dict[str, object]]) -> str:
    head = ("scenario", "wall s", "sim-s/wall-s", "events/s", "steps/s", "mails/s", "peak RSS MiB")
    rows = [head]
    for result in results:
        m = result["median"]
        rows.append((Path(str(result["scenario"])).stem, f"{m['wall_s']:.2f}",
                     f"{m['sim_s_per_wall_s']:,.0f}", f"{m['events_per_wall_s']:,.0f}",
                     f"{m['steps_per_wall_s']:,.0f}", f"{m['mails_per_wall_s']:,.0f}",
                     f"{m['peak_rss_mib']:.0f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", default=["scenarios/quickstart.yaml"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_run(args.one)))
        return 0
    results = [measure(path, args.repeat) for path in args.scenarios]
    RESULTS.mkdir(parents=True, exist_ok=True)
    report = {"benchmark": "sim_speed", "commit": commit(), "python": platform.python_version(),
              "machine": {"system": platform.system(), "machine": platform.machine(),
                          "cpus": __import__("os").cpu_count()},
              "repeat": args.repeat, "results": results}
    (RESULTS / "sim_speed.json").write_text(json.dumps(report, indent=2) + "\n")
    print(table(results))
    print(f"(median of {args.repeat} runs each; written to {RESULTS / 'sim_speed.json'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
