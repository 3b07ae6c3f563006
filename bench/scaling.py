#!/usr/bin/env python3
"""Scaling: generated networks of N LKMs (100 users each, a simulated day) in one process.

For each size: wall time, clock steps, recorded events, mails and peak RSS, each size in a fresh
process; then a least-squares fit of log(wall) against log(events) (an exponent of 1 means cost
grows linearly with the work). Writes bench/results/scaling.json and prints a table.

    python bench/scaling.py [--sizes 10 100 1000] [--users-per-lkm 100]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


def one_size(lkms: int, users_per_lkm: int) -> dict[str, float]:
    sys.path.insert(0, str(ROOT))
    from nodes.generate import city
    from nodes.harness import run
    from simulator.scenario import parse_scenario

    kms = max(2, lkms // 3)
    data = city(kms=kms, lkms=lkms, users=lkms * users_per_lkm, duration="1d",
                name=f"scale{lkms}")
    data["outages"] = []
    scenario = parse_scenario(data)
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        outcome = asyncio.run(run(scenario, Path(out)))
        wall_s = time.perf_counter() - started
        events = sum(1 for _ in open(Path(out) / "events.jsonl"))
    return {"lkms": lkms, "kms": kms, "users": lkms * users_per_lkm, "wall_s": wall_s,
            "clock_steps": outcome.steps, "events": events,
            "mails": outcome.summary["audit"]["mails_sent"],
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def fit_exponent(rows: list[dict[str, float]]) -> float | None:
    """Slope of log(wall) against log(events): 1 is linear."""
    points = [(math.log(r["events"]), math.log(r["wall_s"])) for r in rows if r["events"] > 0]
    if len(points) < 2:
        return None
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    var = sum((x - mean_x) ** 2 for x, _ in points)
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / var if var else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--users-per-lkm", type=int, default=100)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_size(args.one, args.users_per_lkm)))
        return 0
    rows = []
    for size in args.sizes:
        out = subprocess.run([sys.executable, __file__, "--one", str(size), "--users-per-lkm",
                              str(args.users_per_lkm)], cwd=ROOT, capture_output=True,
                             text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"{size} LKMs: {rows[-1]['wall_s']:.1f} s", file=sys.stderr)
    exponent = fit_exponent(rows)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "scaling.json").write_text(json.dumps({
        "benchmark": "scaling", "python": platform.python_version(), "rows": rows,
        "wall_vs_events_exponent": exponent}, indent=2) + "\n")
    print(f"{'LKMs':>6} {'users':>7} {'wall s':>8} {'events':>9} {'mails':>8} {'peak MiB':>9}")
    for r in rows:
        print(f"{r['lkms']:>6} {r['users']:>7} {r['wall_s']:>8.1f} {r['events']:>9} "
              f"{r['mails']:>8} {r['peak_rss_mib']:>9.0f}")
    if exponent is not None:
        print(f"wall time grows as events^{exponent:.2f} (1.00 = linear)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
