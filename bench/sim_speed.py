#!/usr/bin/env python3
"""Simulation speed: wall time, simulated seconds per wall second, events per second, peak RSS.

Each scenario runs with each SAE transport (``http``: real HTTP between simulated SAEs and their
LKMs, the scenario files' default; ``direct``: the same ETSI messages to the LKM actor), each
repetition in a fresh process (so peak RSS is that run's own). Three wall times per run:
``run`` (build the network and simulate, what the CLI prints), ``total`` (run plus the report:
CSV, JSONL, plots, expectations) and ``process`` (the whole command, imports included). The
table shows medians; bench/results/sim_speed.json keeps every figure. The issue's targets
(quickstart under 2 s, city under 60 s, both over HTTP) are judged on ``total``.

    python bench/sim_speed.py [--repeat 3] [--transport http direct] [--against REF]
                              [SCENARIO.yaml ...]
    (default: scenarios/quickstart.yaml scenarios/two_sites.yaml)

With ``--against REF`` each run alternates with a run of commit REF and a second table gives
this tree's figures over REF's: a change's cost measured in one run, on one machine.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import export_tree  # noqa: E402
from common import table as common_table  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


TARGETS_S = {"quickstart": 2.0, "city": 60.0}  # issue 8: total wall over HTTP


def one_run(scenario_path: str, transport: str) -> dict[str, float]:
    """Run one scenario in this process; return its figures."""
    sys.path.insert(0, str(ROOT))
    from nodes.run.harness import run
    from nodes.run.scenario import load_scenario

    scenario = load_scenario(scenario_path).model_copy(update={"transport": transport})
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        outcome = asyncio.run(run(scenario, Path(out)))
        wall_s = time.perf_counter() - started
        events = sum(1 for _ in open(Path(out) / "events.jsonl"))
    return {"wall_s": wall_s, "run_s": outcome.wall_s, "simulated_s": scenario.duration_s,
            "clock_steps": outcome.steps,
            "events": events, "mails": outcome.summary["audit"]["mails_sent"],
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "exit_code": outcome.exit_code}


def run_once(tree: Path, scenario_path: str, transport: str) -> dict[str, float]:
    """One run in a fresh process, of the code in ``tree`` (this work tree, or an exported
    commit with its own bench/sim_speed.py)."""
    started = time.perf_counter()
    out = subprocess.run([sys.executable, str(tree / "bench" / "sim_speed.py"), "--one",
                          scenario_path, "--transport", transport], cwd=tree,
                         capture_output=True, text=True, check=True)
    process_s = time.perf_counter() - started
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "process_s": process_s}


def medians(runs: list[dict[str, float]]) -> dict[str, float]:
    med = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
    return {**med, "sim_s_per_wall_s": med["simulated_s"] / med["wall_s"],
            "events_per_wall_s": med["events"] / med["wall_s"],
            "steps_per_wall_s": med["clock_steps"] / med["wall_s"],
            "mails_per_wall_s": med["mails"] / med["wall_s"]}


def measure(scenario_path: str, transport: str, repeat: int,
            against: Path | None = None) -> dict[str, object]:
    """``repeat`` runs; with ``against`` (an exported commit), each run of this tree is followed
    by one of that commit's, so both see the same machine, and their ratios are reported."""
    runs, other = [], []
    for _ in range(repeat):
        runs.append(run_once(ROOT, scenario_path, transport))
        if against is not None:
            other.append(run_once(against, scenario_path, transport))
    result: dict[str, object] = {"scenario": scenario_path, "transport": transport,
                                 "runs": runs, "median": medians(runs)}
    if other:
        mine, theirs = medians(runs), medians(other)
        result["against"] = {"runs": other, "median": theirs, "ratio": {
            key: mine[key] / theirs[key] for key in ("run_s", "wall_s", "process_s",
                                                     "events_per_wall_s", "peak_rss_mib")}}
    return result


def commit() -> str:
    return commit_of("HEAD")


def commit_of(ref: str) -> str:
    out = subprocess.run(["git", "rev-parse", "--short", ref], cwd=ROOT, capture_output=True,
                         text=True)
    return out.stdout.strip() or "unknown"


def table(results: list[dict[str, object]]) -> str:
    head = ("scenario", "transport", "run s", "total s", "process s", "sim-s/wall-s", "events/s",
            "steps/s", "mails/s", "peak RSS MiB")
    rows = [head]
    for result in results:
        m = result["median"]
        rows.append((Path(str(result["scenario"])).stem, str(result["transport"]),
                     f"{m['run_s']:.2f}", f"{m['wall_s']:.2f}", f"{m['process_s']:.2f}",
                     f"{m['sim_s_per_wall_s']:,.0f}", f"{m['events_per_wall_s']:,.0f}",
                     f"{m['steps_per_wall_s']:,.0f}", f"{m['mails_per_wall_s']:,.0f}",
                     f"{m['peak_rss_mib']:.0f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def verdicts(results: list[dict[str, object]]) -> list[str]:
    """The issue's wall-time targets, judged on the median total over HTTP (direct shown too)."""
    lines = []
    for result in results:
        name = Path(str(result["scenario"])).stem
        if name not in TARGETS_S:
            continue
        total = float(result["median"]["wall_s"])  # type: ignore[index]
        ok = total < TARGETS_S[name]
        label = "target" if result["transport"] == "http" else "(not the target's transport)"
        lines.append(f"{'met' if ok else 'MISSED':6} {name:10} {result['transport']:6} "
                     f"{total:7.2f} s total (target < {TARGETS_S[name]:g} s over http) {label}")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*",
                        default=["scenarios/quickstart.yaml", "scenarios/two_sites.yaml"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--transport", nargs="+", choices=("http", "direct"),
                        default=["http", "direct"])
    parser.add_argument("--against", metavar="REF", help="also run each scenario on this commit "
                        "(git archive), alternating run by run, and report this tree's "
                        "figures over its (e.g. --against HEAD~1)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_run(args.one, args.transport[0])))
        return 0
    with tempfile.TemporaryDirectory(prefix="qkdsim-sim-speed-") as tmp:
        against = export_tree(args.against, Path(tmp) / "tree") if args.against else None
        results = []
        for path in args.scenarios:
            for transport in args.transport:
                results.append(measure(path, transport, args.repeat, against))
                print(table(results[-1:]).splitlines()[-1], flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    report = {"benchmark": "sim_speed", "commit": commit(), "python": platform.python_version(),
              "machine": {"system": platform.system(), "machine": platform.machine(),
                          "cpus": __import__("os").cpu_count()},
              "repeat": args.repeat, "results": results, "targets": verdicts(results),
              "against": commit_of(args.against) if args.against else None}
    (RESULTS / "sim_speed.json").write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(table(results))
    print(f"(median of {args.repeat} runs each; written to {RESULTS / 'sim_speed.json'})")
    for line in verdicts(results):
        print(line)
    if args.against:
        print(f"\nthis tree over commit {commit_of(args.against)} (medians, runs alternating):")
        print(ratio_table(results))
    return 0


def ratio_table(results: list[dict[str, object]]) -> str:
    head = ("scenario / transport", "run s", "ref run s", "run x", "total x", "process x",
            "events/s x", "peak RSS x")
    rows = []
    for result in results:
        other = result["against"]  # type: ignore[index]
        ratio = other["ratio"]  # type: ignore[index]
        rows.append((f"{Path(str(result['scenario'])).stem} {result['transport']}",
                     f"{result['median']['run_s']:.2f}",  # type: ignore[index]
                     f"{other['median']['run_s']:.2f}",  # type: ignore[index]
                     *(f"{ratio[key]:.3f}" for key in ("run_s", "wall_s", "process_s",
                                                       "events_per_wall_s", "peak_rss_mib"))))
    return common_table(head, rows)


if __name__ == "__main__":
    sys.exit(main())
