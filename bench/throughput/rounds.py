"""The measurement rounds (quiet waits, noisy re-runs), the figures, the targets and the table."""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from common import system_busy_s

from .client import Target, drive
from .constants import (
    BARE_BODIES,
    CEILING_BODY,
    TARGET_CONCURRENCY,
    TARGETS,
    TRANSPORT_NAMES,
    WORKLOADS,
)
from .servers import refill, sync_total


@dataclass
class Phase:
    transport: str
    server: str  # "lkm" or "bare"
    workload: str  # for bare: the body name
    concurrency: int
    runs: list[dict[str, Any]] = field(default_factory=list)
    discarded: list[dict[str, Any]] = field(default_factory=list)  # too noisy, run again

    @property
    def key(self) -> tuple[str, str, str, int]:
        return (self.transport, self.server, self.workload, self.concurrency)

    def median(self, name: str) -> float:
        values = [r[name] for r in self.runs if not math.isnan(r[name])]
        return statistics.median(values) if values else math.nan


class Quiet:
    """Before each phase, wait (within a total budget) until other processes leave the CPUs
    alone: on a shared machine a phase measured next to someone's test run means nothing."""

    def __init__(self, threshold_pct: float, budget_s: float, log: Callable[[str], None]) -> None:
        self.threshold_pct = threshold_pct
        self.budget_s = budget_s
        self.log = log

    async def wait(self) -> float:
        waited = 0.0
        while True:
            before, started = system_busy_s(), time.perf_counter()
            await asyncio.sleep(0.5)
            load = 100 * (system_busy_s() - before) / (time.perf_counter() - started)
            if math.isnan(load) or load <= self.threshold_pct or self.budget_s <= 0:
                return waited
            if waited == 0.0:
                self.log(f"  (other processes use {load:.0f} % of a core: waiting for quiet, "
                         f"{self.budget_s:.0f} s of waiting left)")
            waited += 0.5
            self.budget_s -= 0.5


async def measure(args: argparse.Namespace, targets: dict[tuple[str, str], Target],
                  log: Callable[[str], None]) -> dict[tuple[str, str, str, int], Phase]:
    phases: dict[tuple[str, str, str, int], Phase] = {}
    quiet = Quiet(args.quiet_threshold, args.quiet_budget, log)

    async def one(round_no: int, phase: Phase, target: Target) -> None:
        """Run a phase; run it again (at most ``--retries`` times) if other processes took
        more than ``--noisy`` % of a core meanwhile, keeping the discarded runs on record."""
        for attempt in range(args.retries + 1):
            if phase.server != "bare":
                before = await refill(target)
                syncs = await sync_total(target)
            waited = await quiet.wait()
            run = await drive(target, phase.workload, phase.concurrency, args.seconds,
                              args.warmup)
            run["waited_for_quiet_s"] = waited
            if phase.server != "bare":
                run["syncs_during_phase"] = await sync_total(target) - syncs
                run["pool_before"] = before
            log(_progress(round_no, phase, run))
            noisy = run["other_cpu_pct"] > args.noisy
            if not noisy or attempt == args.retries or quiet.budget_s <= 0:
                run["attempt"] = attempt + 1
                phase.runs.append(run)
                return
            log(f"    (other processes took {run['other_cpu_pct']:.0f} % of a core: run again)")
            phase.discarded.append(run)

    for round_no in range(1, args.repeat + 1):
        for transport in args.transport:
            for concurrency in args.concurrency:
                servers = [("bare", BARE_BODIES), ("lkm", WORKLOADS)]
                if ("ref", transport) in targets:  # --against: the other commit, alternately
                    servers.append(("ref", WORKLOADS))
                for server, names in servers:
                    for name in names:
                        phase = phases.setdefault((transport, server, name, concurrency),
                                                  Phase(transport, server, name, concurrency))
                        await one(round_no, phase, targets[(server, transport)])
    return phases


def _progress(round_no: int, phase: Phase, run: dict[str, Any]) -> str:
    extra = f"  ERRORS {run['errors']}: {run['first_error']}" if run["errors"] else ""
    if run.get("syncs_during_phase"):
        extra += f"  ({run['syncs_during_phase']} syncs during the phase)"
    return (f"  round {round_no}  {phase.transport:4} {phase.server:4} {phase.workload:9} "
            f"c={phase.concurrency:<3} {run['rps']:8,.0f}/s  p50 {run['p50_ms']:6.2f} ms  "
            f"p99 {run['p99_ms']:6.2f} ms  CPU % server {run['server_cpu_pct']:3.0f} "
            f"client {run['client_cpu_pct']:3.0f} other {run['other_cpu_pct']:3.0f}{extra}")


def figures(phases: dict[tuple[str, str, str, int], Phase]) -> list[dict[str, Any]]:
    """One row per (transport, concurrency, workload): medians, ceiling and ratio."""
    rows = []
    for (transport, server, workload, concurrency), phase in phases.items():
        row: dict[str, Any] = {
            "transport": transport, "server": server, "workload": workload,
            "concurrency": concurrency, "runs": len(phase.runs),
            "discarded_runs": len(phase.discarded),
            **{name: phase.median(name) for name in (
                "rps", "p50_ms", "p99_ms", "mean_ms", "server_cpu_pct", "client_cpu_pct",
                "other_cpu_pct",
                "server_cpu_us_per_unit", "server_main_thread_us_per_unit",
                "server_other_threads_us_per_unit")},
            "errors": sum(r["errors"] for r in phase.runs),
            "syncs_during_phases": sum(r.get("syncs_during_phase", 0) for r in phase.runs),
            "rps_runs": [r["rps"] for r in phase.runs],
        }
        if server != "bare":
            ceiling = phases.get((transport, "bare", CEILING_BODY[workload], concurrency))
            row["ceiling_body"] = CEILING_BODY[workload]
            row["ceiling_rps"] = ceiling.median("rps") if ceiling else math.nan
            row["ratio"] = row["rps"] / row["ceiling_rps"] if ceiling else math.nan
            if ceiling:
                row["ratio_runs"] = [r["rps"] / b["rps"] for r, b in zip(phase.runs, ceiling.runs)]
        other = phases.get((transport, "ref", workload, concurrency))
        if server == "lkm" and other is not None and other.median("rps") > 0:  # vs the other
            row["vs_ref"] = row["rps"] / other.median("rps")
            row["vs_ref_runs"] = [r["rps"] / o["rps"] for r, o in zip(phase.runs, other.runs)]
            row["vs_ref_p99"] = row["p99_ms"] / other.median("p99_ms")
        rows.append(row)
    order = {"http": 0, "mtls": 1}
    servers = {"bare": 0, "lkm": 1, "ref": 2}
    rows.sort(key=lambda r: (order.get(r["transport"], 9), r["concurrency"],
                             servers[r["server"]], WORKLOADS.index(r["workload"])))
    return rows


def evaluate_targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        if row["server"] != "lkm" or row["concurrency"] != TARGET_CONCURRENCY:
            continue
        for workload, metric, threshold in TARGETS:
            if row["workload"] != workload:
                continue
            value = row[metric]
            met = (value >= threshold) if metric == "ratio" else (value < threshold)
            if row["errors"]:
                met = False
            out.append({"transport": row["transport"], "workload": workload,
                        "concurrency": TARGET_CONCURRENCY, "metric": metric, "value": value,
                        "threshold": threshold, "met": bool(met)})
    return out


def describe_target(t: dict[str, Any]) -> str:
    transport = TRANSPORT_NAMES.get(t["transport"], t["transport"])
    what = f"{t['workload']:9} {transport:4} c={t['concurrency']}"
    if t["metric"] == "ratio":
        text = (f"{100 * t['value']:5.1f} % of the bare ceiling "
                f"(target >= {100 * t['threshold']:.0f} %)")
    else:
        text = f"p99 {t['value']:6.2f} ms (target < {t['threshold']:.0f} ms)"
    return f"[{'met' if t['met'] else 'MISSED':6}] {what}  {text}"


TABLE_HEAD = ("transport", "c", "server", "workload", "units/s", "p50 ms", "p99 ms",
              "ceiling/s", "% ceiling", "srv CPU %", "srv us/unit", "db thr us/unit",
              "other CPU %", "x ref")


def table_rows(rows: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    out = []
    for r in rows:
        bare = r["server"] == "bare"
        out.append((
            TRANSPORT_NAMES.get(r["transport"], r["transport"]),
            str(r["concurrency"]), r["server"],
            (f"{r['workload']} body" if bare else r["workload"]),
            f"{r['rps']:,.0f}", f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}",
            "" if bare else f"{r['ceiling_rps']:,.0f}",
            "" if bare else f"{100 * r['ratio']:.0f} %",
            f"{r['server_cpu_pct']:.0f}", f"{r['server_cpu_us_per_unit']:.0f}",
            f"{r['server_other_threads_us_per_unit']:.0f}", f"{r['other_cpu_pct']:.0f}",
            f"{r['vs_ref']:.3f}" if "vs_ref" in r else "",
        ))
    return out

