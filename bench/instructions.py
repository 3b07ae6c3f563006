#!/usr/bin/env python3
"""Instructions a scenario run executes, counted by valgrind's callgrind: the same count for the
same run whatever else the machine does, so a change's cost shows where wall times are noise.

Each case is a scenario with its transport and duration set. The simulation's share is its run
minus a *fixed* run of the same tree (the same scenario with no traffic and no outages for 60 s:
imports, set-up and the report). With ``--against REF`` the same cases run on commit REF (git
archive) and the table gives this tree's counts over REF's. Slow: valgrind runs Python about
50 times slower (about 30 minutes for the default cases, both trees).

    python bench/instructions.py [--against REF] [--case SCENARIO:TRANSPORT:DURATION ...]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, ROOT, commit, export_tree, table  # noqa: E402

CASES = ("quickstart:direct:5d", "two_sites:direct:3d", "two_sites:http:3d")
FIXED = "60s"  # a case's duration that means: no traffic, no outages (the fixed part)
_COLLECTED = re.compile(r"Collected : (\d+)")


def one_run(tree: Path, scenario: str, transport: str, duration: str) -> None:
    """Run one case in this process (valgrind's child), with ``tree``'s code."""
    import asyncio

    sys.path.insert(0, str(tree))
    try:
        from nodes.run import load_scenario, run
    except ImportError:  # a tree from before the rooms
        from nodes.harness import run  # type: ignore[no-redef]
        from simulator.scenario import load_scenario  # type: ignore[no-redef]
    loaded = load_scenario(tree / "scenarios" / f"{scenario}.yaml")
    loaded = loaded.model_copy(update={"transport": transport})
    if duration == FIXED:
        loaded = loaded.model_copy(update={"outages": (), "traffic": ()})
    loaded = loaded.with_overrides(duration_s=duration)
    with tempfile.TemporaryDirectory() as out:
        asyncio.run(run(loaded, Path(out)))


def count(tree: Path, scenario: str, transport: str, duration: str) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        done = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/callgrind.out",
             sys.executable, str(Path(__file__).resolve()), "--one", str(tree), scenario,
             transport, duration], capture_output=True, text=True, check=True, cwd=tree)
    found = _COLLECTED.search(done.stderr)
    if found is None:
        raise RuntimeError(f"no count from callgrind: {done.stderr[-500:]}")
    return int(found.group(1))


def measure(tree: Path, cases: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for case in cases:
        scenario, transport, duration = case.split(":")
        fixed = f"{scenario}:{transport}:{FIXED}"
        if fixed not in counts:
            counts[fixed] = count(tree, scenario, transport, FIXED)
            print(f"  {tree.name or 'tree'} {fixed}: {counts[fixed]:,}", flush=True)
        counts[case] = count(tree, scenario, transport, duration)
        print(f"  {tree.name or 'tree'} {case}: {counts[case]:,}", flush=True)
    return counts


def rows(cases: list[str], mine: dict[str, int], theirs: dict[str, int] | None
         ) -> list[dict[str, object]]:
    out = []
    for case in cases:
        scenario, transport, _ = case.split(":")
        fixed = f"{scenario}:{transport}:{FIXED}"
        row: dict[str, object] = {"case": case, "total": mine[case],
                                  "simulation": mine[case] - mine[fixed]}
        if theirs is not None:
            sim = theirs[case] - theirs[fixed]
            row.update(against_total=theirs[case], against_simulation=sim,
                       total_x=mine[case] / theirs[case], simulation_x=row["simulation"] / sim)
        out.append(row)
    return out


def main() -> int:
    if sys.argv[1:2] == ["--one"]:
        tree, scenario, transport, duration = sys.argv[2:6]
        one_run(Path(tree), scenario, transport, duration)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", metavar="REF")
    parser.add_argument("--case", nargs="+", default=list(CASES),
                        help="SCENARIO:TRANSPORT:DURATION (default: %(default)s)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="qkdsim-instructions-") as tmp:
        mine = measure(ROOT, args.case)
        theirs = (measure(export_tree(args.against, Path(tmp) / "against"), args.case)
                  if args.against else None)
    found = rows(args.case, mine, theirs)
    RESULTS.mkdir(parents=True, exist_ok=True)
    report = {"benchmark": "instructions", "commit": commit(),
              "against": commit(args.against) if args.against else None, "rows": found}
    (RESULTS / "instructions.json").write_text(json.dumps(report, indent=2) + "\n")
    head = ["case", "simulation", "total"] + (["REF simulation", "simulation x", "total x"]
                                              if theirs is not None else [])
    lines = [[str(r["case"]), f"{r['simulation']:,}", f"{r['total']:,}"] + (
        [f"{r['against_simulation']:,}", f"{r['simulation_x']:.3f}", f"{r['total_x']:.3f}"]
        if theirs is not None else []) for r in found]
    print(table(head, lines))
    print(f"(instructions; written to {RESULTS / 'instructions.json'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
