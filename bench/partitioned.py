#!/usr/bin/env python3
"""A partitioned run against the same run in one process, on this machine (issue 19).

For each repeat, in alternation: the scenario in one process (``run``), then split into each
N of ``--partitions`` on a local Ray instance (``run_partitioned``, engine ``ray``; N = 1 is
one region actor, so the engine's own cost shows apart from the split). Every partitioned
run's files are checked to be the bytes of the one-process run. Reported, medians over the
repeats:

- wall time of the run (set-up, windows, finish, report) and its ratio to one process;
- windows, and messages between regions per window;
- the **round**: what a window costs beyond the slowest region's work in it (the Ray calls,
  pickling letters and readings, the barrier), per window;
- **time lost at barriers**: region-seconds spent waiting, for the slowest region or for the
  round, summed over windows and regions, as a share of the regions' wall time.

Results: bench/results/partitioned.json and a table.

    python bench/partitioned.py [SCENARIO.yaml] [--partitions 2] [--repeat 3] [--until 1d]
    (default: a generated 40-KM city, 1 day, mail taking 1 s)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ray  # noqa: E402
import yaml  # noqa: E402

from bench.common import commit, machine, table  # noqa: E402
from nodes.parallel import EngineStats, run_partitioned  # noqa: E402
from nodes.run import parse_scenario, run  # noqa: E402
from nodes.run.generate import city  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def outputs(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.relative_to(out).parts[0] != "state"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", nargs="?", help="a scenario file (default: a 40-KM city)")
    parser.add_argument("--partitions", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--until", help="override the duration (default: the scenario's; 1d "
                                        "for the generated city)")
    args = parser.parse_args()
    if args.scenario:
        data: dict[str, Any] = yaml.safe_load(Path(args.scenario).read_text())
        name = args.scenario
    else:
        data = {**city(kms=40, lkms=40, users=80, duration="1d", seed=11, name="forty"),
                "mail_delay": "1s",  # and outages that cross regions (tests/test_parallel.py)
                "outages": [{"at": "3h", "target": "KM05", "kind": "down", "for": "2h"},
                            {"at": "6h", "target": "KM10-KM11", "kind": "latency",
                             "delay": "50ms", "for": "3h"},
                            {"at": "8h", "target": "LKM007", "kind": "crash", "for": "1h"}]}
        name = "generated 40-KM city"
    if args.until:
        data["duration"] = args.until
    scenario = parse_scenario(data)
    ray.init(num_cpus=max(args.partitions), include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING, namespace="qkdsim",
             object_store_memory=128 * 1024 * 1024)
    walls: dict[int, list[float]] = {0: []}
    stats: dict[int, list[EngineStats]] = {n: [] for n in args.partitions}
    try:
        with tempfile.TemporaryDirectory(prefix="qkdsim-partitioned-") as tmp:
            for rep in range(args.repeat):
                began = time.perf_counter()
                asyncio.run(run(scenario, Path(tmp) / "one"))
                walls[0].append(time.perf_counter() - began)
                expected = outputs(Path(tmp) / "one")
                for n in args.partitions:
                    out = Path(tmp) / f"n{n}"
                    seen = EngineStats()
                    began = time.perf_counter()
                    asyncio.run(run_partitioned(scenario, out, n, "ray", stats=seen))
                    walls.setdefault(n, []).append(time.perf_counter() - began)
                    stats[n].append(seen)
                    if outputs(out) != expected:
                        raise SystemExit(f"N={n}: the files differ from the one-process run's")
                print(f"repeat {rep + 1}/{args.repeat}: one process {walls[0][-1]:.1f} s, "
                      + ", ".join(f"N={n} {walls[n][-1]:.1f} s" for n in args.partitions),
                      flush=True)
    finally:
        ray.shutdown()
    one = statistics.median(walls[0])
    results, rows = [], [("1 process", f"{one:.1f}", "1.00", "", "", "", "", "")]
    for n in args.partitions:
        wall = statistics.median(walls[n])
        runs = stats[n]

        def med(value: Any) -> float:
            return statistics.median(value(s) for s in runs)

        windows = med(lambda s: s.windows)
        letters = med(lambda s: s.letters / max(s.windows, 1))
        round_ms = med(lambda s: (s.window_s - s.slowest_s) / max(s.windows, 1) * 1e3)
        idle = med(lambda s: s.idle_s / max(s.window_s * n, 1e-9))
        lost = med(lambda s: s.idle_s)
        result = {"partitions": n, "wall_s": wall, "ratio_to_one_process": wall / one,
                  "walls_s": walls[n], "windows": windows, "letters_per_window": letters,
                  "round_ms": round_ms, "barrier_idle_share": idle, "barrier_lost_s": lost,
                  "window_s": med(lambda s: s.window_s), "slowest_s": med(lambda s: s.slowest_s),
                  "setup_s": med(lambda s: s.setup_s), "finish_s": med(lambda s: s.finish_s)}
        results.append(result)
        rows.append((f"N={n} (Ray)", f"{wall:.1f}", f"{one / wall:.2f}", f"{windows:,.0f}",
                     f"{letters:.2f}", f"{round_ms:.2f}", f"{lost:.1f}", f"{idle:.0%}"))
    report = {"benchmark": "partitioned", "commit": commit(), "machine": machine(),
              "scenario": name, "duration": data["duration"], "repeat": args.repeat,
              "one_process_s": one, "one_process_walls_s": walls[0], "results": results}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "partitioned.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"{name}, {data['duration']}: medians of {args.repeat}, every split checked "
          "byte-identical to one process")
    print(table(("run", "wall s", "speed-up", "windows", "msgs/window", "round ms",
                 "barrier lost s", "idle share"), rows))
    print(f"(written to {RESULTS / 'partitioned.json'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
