"""The command line, the whole run (``run_all``), the report and its Markdown."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import (
    RESULTS,
    ROOT,
    ServerProcess,
    commit,
    dirty_files,
    export_tree,
    machine,
    markdown_table,
    table,
    tree_fingerprint,
)

from .client import Target
from .constants import BARE_BODIES, POOL_KEYS, SOURCE, WORKLOADS
from .profiling import profile, profile_path
from .rounds import (
    TABLE_HEAD,
    Phase,
    Quiet,
    describe_target,
    evaluate_targets,
    figures,
    measure,
    table_rows,
)
from .servers import bare_server, capture_bodies, register, start_bare, start_lkm, write_pki
from .store_hops import db_experiment, db_experiment_process, db_experiment_text


async def run_all(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    phases: dict[tuple[str, str, str, int], Phase] = {}
    bodies: dict[str, str] = {}
    profiles: dict[str, Any] = {}
    db: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="qkdsim-bench-") as tmp:
        work = Path(tmp)
        if args.tree:
            SOURCE["tree"] = args.tree.resolve()
            SOURCE["fingerprint"] = tree_fingerprint(root=SOURCE["tree"])
            SOURCE["label"] = f"tree {SOURCE['tree']}"
            log(f"serving the LKM from {SOURCE['tree']} (fingerprint {SOURCE['fingerprint']})")
        elif args.ref:
            SOURCE["tree"] = export_tree(args.ref, work / "tree")
            SOURCE["fingerprint"] = tree_fingerprint(root=SOURCE["tree"])
            SOURCE["label"] = f"commit {commit(args.ref)}"
            log(f"serving the LKM from commit {commit(args.ref)} ({args.ref}), exported to "
                f"{SOURCE['tree']}")
        pki = write_pki(work)
        if not args.profile_only:
            bodies, phases = await measure_all(args, work, pki, log)
            await Quiet(args.quiet_threshold, min(args.quiet_budget, 60.0), log).wait()
            try:
                db = db_experiment_process(work)
                log(db_experiment_text(db))
            except (subprocess.SubprocessError, ValueError, KeyError) as error:
                db = {"error": f"{type(error).__name__}: {error}"[:2000]}
                log(f"key-store experiment failed (the store's API changed?): {db['error']}")
        if args.profile:
            try:
                profiles = await profile(args, work, pki, log)
            except Exception as error:  # noqa: BLE001 - keep the measurements; report the rest
                profiles = {"error": f"{type(error).__name__}: {error}"[:2000]}
                log(f"profile failed: {profiles['error']}")
    rows = figures(phases)
    return {"bodies_bytes": {k: len(v.encode()) for k, v in bodies.items()},
            "figures": rows, "targets": evaluate_targets(rows),
            "phases": [{"transport": p.transport, "server": p.server, "workload": p.workload,
                        "concurrency": p.concurrency, "runs": p.runs, "discarded": p.discarded}
                       for p in phases.values()],
            "profile": profiles, "db_experiment": db,
            **({"ref_fingerprint": SOURCE["fingerprint"]} if args.ref or args.tree else {})}


async def measure_all(args: argparse.Namespace, work: Path, pki: Path,
                      log: Callable[[str], None]
                      ) -> tuple[dict[str, str], dict[tuple[str, str, str, int], Phase]]:
    """Start the LKMs and the bare servers, run the rounds, stop every server."""
    servers: list[ServerProcess] = []
    try:
        targets: dict[tuple[str, str], Target] = {}
        for transport in args.transport:
            server, target = start_lkm(f"lkm-{transport}", transport, work, pki)
            servers.append(server)
            await register(target)
            targets[("lkm", transport)] = target
        capture_from = targets.get(("lkm", "http"))
        if capture_from is None:  # the bodies are captured over HTTP, from a throwaway node
            server, capture_from = start_lkm("lkm-capture", "http", work, pki)
            servers.append(server)
            await register(capture_from)
        bodies = await capture_bodies(capture_from)
        bodies_path = work / "bodies.json"
        bodies_path.write_text(json.dumps(bodies))
        if args.against:
            other = export_tree(args.against, work / "against")
            log(f"measuring against commit {commit(args.against)} ({args.against}), exported to "
                f"{other}: its LKM runs right after this tree's in every round")
            for transport in args.transport:
                server, target = start_lkm(f"ref-{transport}", transport, work, pki, tree=other,
                                           kind="ref")
                servers.append(server)
                await register(target)
                targets[("ref", transport)] = target
        for transport in args.transport:
            server, target = start_bare(f"bare-{transport}", transport, work, pki, bodies_path)
            servers.append(server)
            targets[("bare", transport)] = target
        log("servers: " + ", ".join(f"{k[0]} {k[1]} {t.base} (pid {t.pid})"
                                    for k, t in targets.items()))
        log("reply bodies (bytes): " + ", ".join(f"{k} {len(v.encode())}"
                                                 for k, v in bodies.items()))
        return bodies, await measure(args, targets, log)
    finally:
        for server in servers:
            server.stop()


def main(doc: str) -> int:
    """The command line of ``bench/node_throughput.py``, whose docstring is ``doc``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per phase")
    parser.add_argument("--warmup", type=float, default=0.5, help="unmeasured seconds per phase")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; figures are medians")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--transport", nargs="+", choices=("http", "mtls"),
                        default=["http", "mtls"])
    parser.add_argument("--quiet-threshold", type=float, default=25.0, metavar="PCT",
                        help="before each phase wait until other processes use at most PCT %% "
                             "of a core (default 25)")
    parser.add_argument("--quiet-budget", type=float, default=600.0, metavar="S",
                        help="total seconds the run may wait for quiet (default 600; 0: never)")
    parser.add_argument("--noisy", type=float, default=50.0, metavar="PCT",
                        help="run a phase again when other processes took more than PCT %% of "
                             "a core during it (default 50)")
    parser.add_argument("--retries", type=int, default=2, help="at most this many re-runs")
    parser.add_argument("--profile", action=argparse.BooleanOptionalAction, default=True,
                        help="profile the LKM under enc_8192 at c=32 afterwards (default: on)")
    parser.add_argument("--profile-seconds", type=float, default=8.0)
    parser.add_argument("--profile-only", action="store_true",
                        help="only the profile; results go to node_throughput_profile.json")
    parser.add_argument("--ref", help="serve the LKM from this commit (git archive into the temp "
                        "folder) instead of the work tree, e.g. HEAD or a branch: a stable "
                        "target while others edit nodes/, and before/after comparisons")
    parser.add_argument("--tree", type=Path, help="serve the LKM from this folder (a copy of "
                        "the project with a prototype change), as it is")
    parser.add_argument("--against", metavar="REF", help="also serve an LKM from this commit "
                        "and measure it in the same rounds, right after this tree's: the "
                        "'x ref' column is this tree's rate over REF's (e.g. --against HEAD~1)")
    parser.add_argument("--out", type=Path, default=RESULTS / "node_throughput.json")
    parser.add_argument("--markdown", type=Path, metavar="JSON",
                        help="print the table and targets of a results file as Markdown, and exit")
    parser.add_argument("--bare-server", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--db-experiment", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--source", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--pki", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.source:  # a child that must import the served tree's nodes, not the work tree's
        sys.path.insert(0, str(args.source))
    if args.bare_server:
        asyncio.run(bare_server(args.bare_server, args.pki))
        return 0
    if args.db_experiment:
        print(json.dumps(asyncio.run(db_experiment(args.db_experiment))))
        return 0
    if args.markdown:
        print(markdown(json.loads(args.markdown.read_text(), parse_float=float)))
        return 0

    if args.profile_only:
        args.profile = True
        if args.out == RESULTS / "node_throughput.json":
            args.out = RESULTS / "node_throughput_profile.json"
    lkms = 2 if args.against else 1
    phases = len(args.transport) * len(args.concurrency) * (len(BARE_BODIES) +
                                                            lkms * len(WORKLOADS))
    estimate = 0 if args.profile_only else phases * args.repeat * (args.seconds + args.warmup + 0.5)
    if args.profile:
        estimate += len(args.transport) * (args.profile_seconds + args.warmup + 10)
    print(f"node_throughput: {0 if args.profile_only else phases} phases x {args.repeat} rounds"
          f"{', then the profile' if args.profile else ''}: about {estimate / 60:.1f} min",
          flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)  # the profile is written beside it
    started = time.monotonic()
    if args.ref:  # pinned now: HEAD may move while the run goes on
        args.ref = subprocess.run(
            ["git", "rev-parse", "--verify", "--quiet", f"{args.ref}^{{commit}}"], cwd=ROOT,
            check=True, capture_output=True, text=True).stdout.strip()
    if args.tree and args.ref:
        parser.error("--tree and --ref exclude each other")
    if args.against:  # pinned now, like --ref
        args.against = subprocess.run(
            ["git", "rev-parse", "--verify", "--quiet", f"{args.against}^{{commit}}"], cwd=ROOT,
            check=True, capture_output=True, text=True).stdout.strip()
    tree_before, load_before = tree_fingerprint(), os.getloadavg()
    result = asyncio.run(run_all(args, lambda line: print(line, flush=True)))
    tree_after = tree_fingerprint()
    if args.ref or args.tree:  # the served tree, not the work tree
        tree_before = result.pop("ref_fingerprint")
        tree_after = tree_fingerprint(root=args.tree) if args.tree else tree_before
    report = {"benchmark": "node_throughput",
              "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
              "commit": f"tree {args.tree}" if args.tree else commit(args.ref), "ref": args.ref,
              "against": commit(args.against) if args.against else None,
              "dirty_files": [] if args.ref or args.tree else dirty_files(),
              "code_fingerprint": {"before": tree_before, "after": tree_after,
                                   "changed_during_run": tree_before != tree_after},
              "load_average": {"before": load_before, "after": os.getloadavg()},
              "machine": machine(),
              "settings": {"seconds": args.seconds, "warmup_s": args.warmup,
                           "repeat": args.repeat, "concurrency": args.concurrency,
                           "transports": args.transport, "pool_keys": POOL_KEYS,
                           "quiet_threshold_pct": args.quiet_threshold,
                           "quiet_budget_s": args.quiet_budget, "noisy_pct": args.noisy,
                           "retries": args.retries},
              "wall_s": time.monotonic() - started, **result}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(_no_nan(report), indent=2, default=str) + "\n")
    rows = report["figures"]
    if args.profile_only:
        print(f"\nwritten to {args.out}")
        return 0
    print()
    print(f"node_throughput  {report['date']}  commit {report['commit']}  "
          f"{report['machine']['cpus']} CPUs  Python {report['machine']['python']}  "
          f"median of {args.repeat} x {args.seconds:g} s")
    print(table(TABLE_HEAD, table_rows(rows)))
    print("(units/s, p50, p99, CPU: medians; srv us/unit: server CPU per unit, db thr: of which "
          "its other threads (aiosqlite); other CPU %: other processes on the machine meanwhile)")
    if tree_before != tree_after:
        print(f"WARNING: nodes/ or simulator/ changed on disk during the run "
              f"({tree_before} -> {tree_after}): servers started at different times ran "
              f"different code")
    print("\ntargets (client and server share the machine's cores):")
    for target in report["targets"]:
        print("  " + describe_target(target))
    bad = [r for r in rows if r["errors"] or r["syncs_during_phases"]]
    for r in bad:
        print(f"  note: {r['transport']} {r['server']} {r['workload']} c={r['concurrency']}: "
              f"{r['errors']} errors, {r['syncs_during_phases']} syncs during its phases")
    print(f"\nwritten to {args.out}")
    if args.profile:
        print("profiles: " + ", ".join(str(profile_path(args, t, ".txt"))
                                        for t in args.transport))
    return 0


def _no_nan(value: Any) -> Any:
    """NaN (a figure with no samples) as null: json.dumps would write the invalid ``NaN``."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _no_nan(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_no_nan(v) for v in value]
    return value


def markdown(report: dict[str, Any]) -> str:
    """The table and the targets as Markdown (for docs/performance.md)."""
    rows = [{k: (math.nan if v is None else v) for k, v in r.items()} for r in report["figures"]]
    m = report["machine"]
    head = (f"{report['date']}, commit `{report['commit']}` (code fingerprint "
            f"`{report['code_fingerprint']['before']}`), {m['cpus']} CPUs ({m['processor']}), "
            f"Python {m['python']}, {m['platform']}; median of {report['settings']['repeat']} "
            f"rounds x {report['settings']['seconds']:g} s per phase; load average before "
            f"{report['load_average']['before'][0]:.2f}, "
            f"after {report['load_average']['after'][0]:.2f}.")
    lines = [*textwrap.wrap(head, 98), "", markdown_table(TABLE_HEAD, table_rows(rows)), "",
             "Targets:", ""]
    lines += [f"- {describe_target(t).replace('[', '**').replace(']', '**', 1)}"
              for t in report["targets"]]
    return "\n".join(lines)
