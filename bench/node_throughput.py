#!/usr/bin/env python3
"""Node throughput: requests/s and latency of one served LKM, against a bare aiohttp ceiling.

What runs (all on loopback, every server in its own process, this process is the client):

* the LKM: ``run_scenario.py --serve`` with a fresh SQLite file, once over HTTP and once over
  mutual TLS (certificates from ``run_scenario.py pki``); two SAEs registered with 10,000 keys
  each, their pools refilled before every phase so that no phase runs low (a threshold sync in
  the middle of a phase would be counted and reported);
* the ceiling: a bare aiohttp server (``--bare-server``, its own process) whose handler returns a
  fixed JSON body of exactly the size of the LKM's reply (captured from the LKM at start-up),
  over HTTP and over mutual TLS with the same certificates.

Both are driven by the same client code: aiohttp over keep-alive, ``--concurrency`` workers (1
and 32 by default), each a loop of one unit after the other for ``--seconds`` after a warm-up.
A unit is one request (``status``, ``enc_256``, ``enc_8192``: enc_keys for 1 key of 256 or 8192
bits) or one pair (``pair_8192``: enc_keys by the master, then dec_keys of that key ID by the
slave, key bytes compared). Each figure is the median of ``--repeat`` rounds; rounds interleave
all phases so that a slow moment of the machine does not hit one figure only. Ratios divide the
LKM's units/s by the bare server's requests/s for the same transport, concurrency and body size
(for pairs: the enc_8192 body, one pair against one bare request).

Shared machines: before each phase the script waits (within a budget) until other processes
leave the CPUs alone, and runs a phase again if they took more than ``--noisy`` % of a core
during it; every phase records the CPU of the server (main thread and aiosqlite's thread apart),
of the client and of everything else.

A key-store experiment follows (no HTTP, no actor): the store calls of one enc_keys as the LKM
makes them, against the same SQL in one function with one thread hop.

Then, unless ``--no-profile``, the LKM is run under cProfile (``python -m cProfile -o FILE
run_scenario.py --serve``, stopped with SIGINT) under the enc_8192 load at concurrency 32, over
HTTP and over mutual TLS, and the profile is summarised by category.

``--at-rest`` measures something else, in a few minutes: two LKMs over HTTP, one with a master
key (``KEY_AT_REST_FILE``: key material sealed in SQLite, docs/architecture.md decision 57) and
one without, driven alternately (which goes first swaps every round) for ``--repeat`` rounds of
each workload at each concurrency (default enc_256, enc_8192 and pair_8192 at c=32: carving,
whole keys, and a key sealed, opened and erased), with the medians and the ratio sealed/plain
of units/s (of the medians, and the median of each round's ratio) and of server CPU per unit.
It writes bench/results/node_throughput_at_rest.json.

``--ref REF`` serves the LKM from a commit (``git archive`` into the temp folder) and ``--tree
DIR`` from a folder, instead of the work tree: a fixed target while others edit ``nodes/``, and
before/after comparisons. ``--markdown FILE`` prints a results file as Markdown.

    python bench/node_throughput.py [--seconds 5] [--repeat 3] [--concurrency 1 32]
                                    [--transport http mtls] [--ref REF | --tree DIR]
                                    [--no-profile | --profile-only]
    python bench/node_throughput.py --at-rest [--seconds 3] [--repeat 5] [--concurrency 32]
                                    [--workloads enc_256 enc_8192 pair_8192] [--tree DIR]

Writes bench/results/node_throughput.json (or ``--out``; the profiles next to it as
``*_profile_{http,mtls}.pstats/.txt``) and prints the table and the targets met/missed.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

# bench/ is not an installed package: this script puts bench/ (for common.py and the package
# throughput/, which holds the benchmark) and the project root (for nodes/) on sys.path
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from common import (
    RESULTS,
    ROOT,
    ServerProcess,
    commit,
    dirty_files,
    free_port,
    machine,
    table,
    tree_fingerprint,
)
from throughput.client import Target, drive
from throughput.rounds import Quiet
from throughput.run import main
from throughput.servers import refill, register

AT_REST_KINDS = ("plain", "sealed")


def start_at_rest_lkm(kind: str, work: Path, tree: Path) -> tuple[ServerProcess, Target]:
    """An LKM over HTTP with a fresh file; ``sealed``: with a master key in a file."""
    env = {"PORT": str(free_port()), "HOST": "127.0.0.1", "USE_HTTPS": "false",
           "USER_KEY_POOL_DB": str(work / f"{kind}.db"), "MAX_KEYS_PER_REQUEST": "100"}
    if kind == "sealed":
        key_file = work / "master.key"
        key_file.write_bytes(os.urandom(32))
        env["KEY_AT_REST_FILE"] = str(key_file)
    server = ServerProcess(kind, [sys.executable, "run_scenario.py", "--serve"], env,
                           work / f"{kind}.log", ready="serving", cwd=tree)
    return server, Target("lkm", "http", server.url_from_first_line(), None, server.pid)


async def at_rest_rounds(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every run: (round, workload, concurrency, kind) and what :func:`drive` measured."""
    runs: list[dict[str, Any]] = []
    servers: list[ServerProcess] = []
    quiet = Quiet(args.quiet_threshold, args.quiet_budget, print)
    with tempfile.TemporaryDirectory(prefix="qkdsim-at-rest-") as tmp:
        try:
            targets = {}
            for kind in AT_REST_KINDS:
                server, targets[kind] = start_at_rest_lkm(kind, Path(tmp), args.tree)
                servers.append(server)
                await register(targets[kind])
            for round_no in range(1, args.repeat + 1):
                order = AT_REST_KINDS if round_no % 2 else AT_REST_KINDS[::-1]
                for workload in args.workloads:
                    for concurrency in args.concurrency:
                        for kind in order:
                            await refill(targets[kind])
                            await quiet.wait()
                            run = await drive(targets[kind], workload, concurrency,
                                              args.seconds, args.warmup)
                            runs.append({"round": round_no, "workload": workload,
                                         "concurrency": concurrency, "kind": kind, **run})
                            print(f"  round {round_no}  {kind:6} {workload:9} c={concurrency:<3}"
                                  f" {run['rps']:8,.0f}/s  p99 {run['p99_ms']:6.2f} ms  server "
                                  f"{run['server_cpu_us_per_unit']:5.0f} us/unit  errors "
                                  f"{run['errors']}  other CPU {run['other_cpu_pct']:3.0f} %",
                                  flush=True)
        finally:
            for server in servers:
                server.stop()
    return runs


def at_rest_figures(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per workload and concurrency: medians of each kind and the ratios sealed/plain."""
    rows = []
    for workload, concurrency in dict.fromkeys((r["workload"], r["concurrency"]) for r in runs):
        mine = [r for r in runs if (r["workload"], r["concurrency"]) == (workload, concurrency)]
        by_kind = {kind: [r for r in mine if r["kind"] == kind] for kind in AT_REST_KINDS}
        row: dict[str, Any] = {"workload": workload, "concurrency": concurrency,
                               "errors": sum(r["errors"] for r in mine)}
        for kind, kind_runs in by_kind.items():
            for name in ("rps", "p99_ms", "server_cpu_us_per_unit", "other_cpu_pct"):
                row[f"{kind}_{name}"] = statistics.median(r[name] for r in kind_runs)
            row[f"{kind}_rps_runs"] = [r["rps"] for r in kind_runs]
        row["ratio_rps"] = row["sealed_rps"] / row["plain_rps"]
        row["ratio_rps_paired"] = statistics.median(
            s["rps"] / p["rps"] for s, p in zip(by_kind["sealed"], by_kind["plain"]))
        row["ratio_cpu_per_unit"] = (row["sealed_server_cpu_us_per_unit"]
                                     / row["plain_server_cpu_us_per_unit"])
        rows.append(row)
    return rows


def seal_costs(repeat: int = 5, number: int = 2000) -> dict[str, float]:
    """CPU of one seal and one open (us, best of ``repeat``) of 32- and 1,024-byte material, in
    this process: what sealing adds per stored key, without the noise of a served request."""
    import timeit

    from nodes.keynode.store.sealing import AesGcmSealer

    sealer, key_id, costs = AesGcmSealer(os.urandom(32)), "qk_SAE_BOB_001_000001", {}
    for size in (32, 1024):
        material = os.urandom(size)
        stored = sealer.seal(key_id, material)
        for name, call in (("seal", lambda: sealer.seal(key_id, material)),
                           ("open", lambda: sealer.open(key_id, stored))):
            costs[f"{name}_{size}_us"] = min(timeit.repeat(call, repeat=repeat,
                                                           number=number)) / number * 1e6
    return costs


def at_rest_main() -> int:
    """``--at-rest``: a served LKM's throughput with and without a master key, in one run."""
    parser = argparse.ArgumentParser(description="node throughput with and without keys "
                                     "sealed at rest (a master key), alternately in one run")
    parser.add_argument("--at-rest", action="store_true", required=True)
    parser.add_argument("--seconds", type=float, default=3.0, help="measured seconds per phase")
    parser.add_argument("--warmup", type=float, default=0.5, help="unmeasured seconds per phase")
    parser.add_argument("--repeat", type=int, default=5, help="rounds; figures are medians")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[32])
    parser.add_argument("--workloads", nargs="+", default=["enc_256", "enc_8192", "pair_8192"],
                        choices=("status", "enc_256", "enc_8192", "pair_8192"))
    parser.add_argument("--quiet-threshold", type=float, default=25.0, metavar="PCT")
    parser.add_argument("--quiet-budget", type=float, default=60.0, metavar="S",
                        help="total seconds the run may wait for quiet (default 60)")
    parser.add_argument("--tree", type=Path, default=ROOT,
                        help="serve the LKMs from this folder (default: the work tree)")
    parser.add_argument("--out", type=Path, default=RESULTS / "node_throughput_at_rest.json")
    args = parser.parse_args()
    phases = args.repeat * len(args.workloads) * len(args.concurrency) * len(AT_REST_KINDS)
    print(f"node_throughput --at-rest: {phases} phases, about "
          f"{phases * (args.seconds + args.warmup + 1) / 60:.1f} min", flush=True)
    load_before = os.getloadavg()
    sys.path.insert(0, str(args.tree))  # the served tree's sealing, for seal_costs
    costs = seal_costs()
    print("one seal / open, us: " + ", ".join(f"{k[:-3]} {v:.1f}" for k, v in costs.items()))
    rows = at_rest_figures(asyncio.run(at_rest_rounds(args)))
    report = {"benchmark": "node_throughput_at_rest",
              "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
              "commit": commit(), "dirty_files": dirty_files(), "tree": str(args.tree),
              "code_fingerprint": tree_fingerprint(root=args.tree), "machine": machine(),
              "load_average": {"before": load_before, "after": os.getloadavg()},
              "settings": {k: (str(v) if isinstance(v, Path) else v)
                           for k, v in vars(args).items()},
              "seal_costs_us": costs, "figures": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nmedian of {args.repeat} rounds x {args.seconds:g} s, HTTP, "
          f"{report['machine']['cpus']} CPUs, load average {load_before[0]:.2f} before")
    print(table(("workload", "c", "plain/s", "sealed/s", "sealed/plain", "paired",
                 "plain us/unit", "sealed us/unit", "CPU ratio", "errors"),
                [(r["workload"], str(r["concurrency"]), f"{r['plain_rps']:,.0f}",
                  f"{r['sealed_rps']:,.0f}", f"{r['ratio_rps']:.3f}",
                  f"{r['ratio_rps_paired']:.3f}", f"{r['plain_server_cpu_us_per_unit']:.0f}",
                  f"{r['sealed_server_cpu_us_per_unit']:.0f}",
                  f"{r['ratio_cpu_per_unit']:.3f}", str(r["errors"])) for r in rows]))
    print(f"(paired: the median of each round's sealed/plain)\nwritten to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(at_rest_main() if "--at-rest" in sys.argv[1:] else main(__doc__ or ""))
