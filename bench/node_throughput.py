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

``--ref REF`` serves the LKM from a commit (``git archive`` into the temp folder) and ``--tree
DIR`` from a folder, instead of the work tree: a fixed target while others edit ``nodes/``, and
before/after comparisons. ``--markdown FILE`` prints a results file as Markdown.

    python bench/node_throughput.py [--seconds 5] [--repeat 3] [--concurrency 1 32]
                                    [--transport http mtls] [--ref REF | --tree DIR]
                                    [--no-profile | --profile-only]

Writes bench/results/node_throughput.json (or ``--out``; the profiles next to it as
``*_profile_{http,mtls}.pstats/.txt``) and prints the table and the targets met/missed.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import os
import pstats
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from common import (
    RESULTS,
    ROOT,
    ServerProcess,
    commit,
    dirty_files,
    export_tree,
    free_port,
    machine,
    markdown_table,
    percentile,
    system_busy_s,
    table,
    thread_cpu_s,
    tree_fingerprint,
)

SOURCE = {"tree": ROOT}  # the tree whose run_scenario.py is served: the work tree, or --ref's
ALICE, BOB = "SAE_ALICE_001", "SAE_BOB_001"
DIRECTIONS = ((ALICE, BOB), (BOB, ALICE))  # (master, slave): worker w uses DIRECTIONS[w % 2]
POOL_KEYS = 10_000
WORKLOADS = ("status", "enc_256", "enc_8192", "pair_8192")
BARE_BODIES = ("status", "enc_256", "enc_8192")
CEILING_BODY = {"status": "status", "enc_256": "enc_256", "enc_8192": "enc_8192",
                "pair_8192": "enc_8192"}
TARGETS = (  # (workload, metric, threshold): at concurrency 32, for each transport
    ("enc_256", "ratio", 0.50), ("enc_8192", "ratio", 0.50),
    ("enc_256", "p99_ms", 20.0), ("enc_8192", "p99_ms", 20.0),
    ("pair_8192", "ratio", 0.25),
)
TARGET_CONCURRENCY = 32
TRANSPORT_NAMES = {"http": "HTTP", "mtls": "mTLS"}


class BadReply(Exception):
    pass


# -- the client ------------------------------------------------------------------------------------

@dataclass
class Target:
    """One server to drive: the LKM (ETSI routes) or the bare ceiling (``/bare/{body}``)."""

    kind: str  # "lkm" or "bare"
    transport: str  # "http" or "mtls"
    base: str
    pki: Path | None = None
    pid: int | None = None

    def status_url(self, slave: str) -> str:
        return (f"{self.base}/api/v1/keys/{slave}/status" if self.kind == "lkm"
                else f"{self.base}/bare/status")

    def enc_url(self, slave: str, size: int) -> str:
        return (f"{self.base}/api/v1/keys/{slave}/enc_keys" if self.kind == "lkm"
                else f"{self.base}/bare/enc_{size}")

    def dec_url(self, master: str) -> str:
        return f"{self.base}/api/v1/keys/{master}/dec_keys"


class Client:
    """One keep-alive session per SAE identity (a TLS identity belongs to the connection)."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.sessions: dict[str, Any] = {}

    async def __aenter__(self) -> Self:
        import aiohttp

        for sae in (ALICE, BOB):
            ssl_ctx: Any = False
            headers = {}
            if self.target.transport == "mtls":
                from nodes.server.pki import client_ssl_context

                assert self.target.pki is not None
                ssl_ctx = client_ssl_context(self.target.pki / "ca.crt",
                                             self.target.pki / f"{sae}.crt",
                                             self.target.pki / f"{sae}.key")
            else:
                headers["X-SAE-ID"] = sae
            connector = aiohttp.TCPConnector(limit=0, ssl=ssl_ctx)
            self.sessions[sae] = aiohttp.ClientSession(
                connector=connector, headers=headers,
                timeout=aiohttp.ClientTimeout(total=30))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for session in self.sessions.values():
            await session.close()

    async def get(self, sae: str, url: str) -> Any:
        async with self.sessions[sae].get(url) as reply:
            body = await reply.read()
            if reply.status != 200:
                raise BadReply(f"GET {url}: {reply.status} {body[:200]!r}")
        return json.loads(body)

    async def post(self, sae: str, url: str, payload: bytes, ok: int = 200) -> Any:
        async with self.sessions[sae].post(
                url, data=payload, headers={"Content-Type": "application/json"}) as reply:
            body = await reply.read()
            if reply.status != ok:
                raise BadReply(f"POST {url}: {reply.status} {body[:200]!r}")
        return json.loads(body)


ENC_PAYLOAD = {size: json.dumps({"number": 1, "size": size}).encode() for size in (256, 8192)}


def make_unit(client: Client, workload: str) -> Callable[[int], Awaitable[None]]:
    """The unit of work for ``workload``: a coroutine function of the direction (0 or 1)."""
    target = client.target

    async def status(direction: int) -> None:
        master, slave = DIRECTIONS[direction]
        view = await client.get(master, target.status_url(slave))
        if "stored_key_count" not in view:
            raise BadReply("status without stored_key_count")

    def enc(size: int) -> Callable[[int], Awaitable[None]]:
        payload = ENC_PAYLOAD[size]

        async def unit(direction: int) -> None:
            master, slave = DIRECTIONS[direction]
            reply = await client.post(master, target.enc_url(slave, size), payload)
            if len(reply["keys"]) != 1:
                raise BadReply("enc_keys did not return one key")
        return unit

    async def pair(direction: int) -> None:
        master, slave = DIRECTIONS[direction]
        enc_reply = await client.post(master, target.enc_url(slave, 8192), ENC_PAYLOAD[8192])
        key = enc_reply["keys"][0]
        payload = json.dumps({"key_IDs": [{"key_ID": key["key_ID"]}]}).encode()
        dec_reply = await client.post(slave, target.dec_url(master), payload)
        if dec_reply["keys"] != [key]:
            raise BadReply("dec_keys returned other bytes than enc_keys")

    units = {"status": status, "enc_256": enc(256), "enc_8192": enc(8192), "pair_8192": pair}
    return units[workload]


async def drive(target: Target, workload: str, concurrency: int, seconds: float,
                warmup_s: float) -> dict[str, Any]:
    """Run one phase; return units/s, latency percentiles, errors and CPU used."""
    latencies: list[float] = []
    errors: list[str] = []
    window: dict[str, Any] = {}
    stopping = asyncio.Event()
    completed = 0

    async with Client(target) as client:
        unit = make_unit(client, workload)

        async def worker(w: int) -> None:
            nonlocal completed
            direction = w % 2
            while not stopping.is_set():
                started = time.perf_counter()
                try:
                    await unit(direction)
                except Exception as error:  # noqa: BLE001 - counted and reported
                    errors.append(f"{type(error).__name__}: {error}"[:300])
                    await asyncio.sleep(0.01)
                    continue
                ended = time.perf_counter()
                completed += 1
                if "start" in window and not stopping.is_set():
                    latencies.append(ended - started)

        async def clock() -> None:
            await asyncio.sleep(warmup_s)
            window.update(start=time.perf_counter(), proc=time.process_time(),
                          server=_cpu(target.pid), errors=len(errors), busy=system_busy_s())
            await asyncio.sleep(seconds)
            window.update(end=time.perf_counter(), proc_end=time.process_time(),
                          server_end=_cpu(target.pid), busy_end=system_busy_s())
            stopping.set()

        workers = [asyncio.create_task(worker(w)) for w in range(concurrency)]
        await clock()
        await asyncio.wait_for(asyncio.gather(*workers), timeout=60)

    elapsed = window["end"] - window["start"]
    n = len(latencies)
    server_cpu = _cpu_delta(window["server"], window["server_end"], target.pid)
    per_unit = (lambda s: s / n * 1e6 if n else math.nan)
    client_cpu = window["proc_end"] - window["proc"]
    # everything else the machine did meanwhile (other processes: noise), in % of one core
    foreign = window["busy_end"] - window["busy"] - client_cpu - server_cpu["total"]
    return {
        "units": n, "seconds": elapsed, "rps": n / elapsed,
        "p50_ms": percentile(latencies, 50) * 1e3, "p99_ms": percentile(latencies, 99) * 1e3,
        "mean_ms": (statistics.fmean(latencies) * 1e3) if latencies else math.nan,
        "errors": len(errors) - window["errors"], "first_error": errors[0] if errors else None,
        "units_total": completed,
        "client_cpu_pct": 100 * client_cpu / elapsed,
        "other_cpu_pct": max(0.0, 100 * foreign / elapsed),
        "server_cpu_pct": 100 * server_cpu["total"] / elapsed,
        "server_cpu_us_per_unit": per_unit(server_cpu["total"]),
        "server_main_thread_us_per_unit": per_unit(server_cpu["main"]),
        "server_other_threads_us_per_unit": per_unit(server_cpu["others"]),
    }


def _cpu(pid: int | None) -> dict[int, float]:
    return thread_cpu_s(pid) if pid else {}


def _cpu_delta(before: dict[int, float], after: dict[int, float],
               pid: int | None) -> dict[str, float]:
    deltas = {tid: after[tid] - before.get(tid, 0.0) for tid in after}
    main = deltas.get(pid or -1, 0.0)
    return {"total": sum(deltas.values()), "main": main, "others": sum(deltas.values()) - main}


# -- LKM set-up, refills, sync counts -------------------------------------------------------------

async def register(target: Target) -> None:
    async with Client(target) as client:
        for sae in (ALICE, BOB):
            payload = json.dumps({"sae_id": sae, "user_email": f"{sae.lower()}@example.com",
                                  "initial_pool_size": POOL_KEYS}).encode()
            reply = await client.post(ALICE, f"{target.base}/api/v1/keys/register", payload,
                                      ok=201)
            if reply["keys_generated"] != POOL_KEYS:
                raise BadReply(f"registered {sae} with {reply['keys_generated']} keys")


async def refill(target: Target) -> dict[str, int]:
    """Top both pools up to their limit; return the keys available after."""
    out = {}
    async with Client(target) as client:
        for sae in (ALICE, BOB):
            reply = await client.post(ALICE, f"{target.base}/api/v1/keys/{sae}/refill", b"{}")
            out[sae] = reply["available_after"]
    return out


async def sync_total(target: Target) -> int:
    async with Client(target) as client:
        reply = await client.get(ALICE, f"{target.base}/api/v1/keys/km/status")
    return int(reply["sync_stats"]["total"])


async def capture_bodies(target: Target) -> dict[str, str]:
    """The LKM's replies, byte for byte, that the bare server will serve."""
    import aiohttp

    bodies = {}
    async with aiohttp.ClientSession(headers={"X-SAE-ID": ALICE}) as session:
        async with session.get(target.status_url(BOB)) as reply:
            bodies["status"] = await reply.text()
        for size in (256, 8192):
            async with session.post(target.enc_url(BOB, size), data=ENC_PAYLOAD[size],
                                    headers={"Content-Type": "application/json"}) as reply:
                assert reply.status == 200, await reply.text()
                bodies[f"enc_{size}"] = await reply.text()
    return bodies


# -- servers ------------------------------------------------------------------------------------

def start_lkm(name: str, transport: str, work: Path, pki: Path,
              profile_to: Path | None = None,
              db: str | None = None) -> tuple[ServerProcess, Target]:
    env = {"PORT": str(free_port()), "HOST": "127.0.0.1",
           "USER_KEY_POOL_DB": str(work / f"{db or name}.db"), "MAX_KEYS_PER_REQUEST": "100",
           "USE_HTTPS": "false"}
    if transport == "mtls":
        env.update(USE_HTTPS="true", CA_FILE=str(pki / "ca.crt"), KME_CERT=str(pki / "kme.crt"),
                   KME_KEY=str(pki / "kme.key"))
    argv = [sys.executable]
    if profile_to is not None:
        argv += ["-m", "cProfile", "-o", str(profile_to)]
    argv += ["run_scenario.py", "--serve"]
    server = ServerProcess(name, argv, env, work / f"{name}.log", ready="serving",
                           cwd=SOURCE["tree"])
    return server, Target("lkm", transport, server.url_from_first_line(), pki, server.pid)


def start_bare(name: str, transport: str, work: Path, pki: Path,
               bodies: Path) -> tuple[ServerProcess, Target]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--bare-server", str(bodies)]
    if transport == "mtls":
        argv += ["--pki", str(pki)]
    server = ServerProcess(name, argv, {}, work / f"{name}.log", ready="serving")
    return server, Target("bare", transport, server.url_from_first_line(), pki, server.pid)


async def bare_server(bodies_path: Path, pki: Path | None) -> None:
    """The ceiling: route, read the request, return a fixed JSON body. Nothing else."""
    from aiohttp import web

    bodies: dict[str, str] = json.loads(bodies_path.read_text())

    async def handler(request: web.Request) -> web.Response:
        if request.body_exists:
            await request.read()
        return web.Response(text=bodies[request.match_info["name"]],
                            content_type="application/json")

    app = web.Application()
    app.add_routes([web.get("/bare/{name}", handler), web.post("/bare/{name}", handler)])
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=10.0)
    await runner.setup()
    ssl_ctx = None
    if pki is not None:
        from nodes.server.pki import server_ssl_context

        ssl_ctx = server_ssl_context(pki / "ca.crt", pki / "kme.crt", pki / "kme.key")
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_ctx)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    scheme = "https" if ssl_ctx else "http"
    print(f"bare aiohttp serving at {scheme}://127.0.0.1:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await runner.cleanup()


def write_pki(work: Path) -> Path:
    pki = work / "pki"
    subprocess.run([sys.executable, "run_scenario.py", "pki", "--out", str(pki),
                    "--sae", ALICE, "--sae", BOB], cwd=SOURCE["tree"], check=True,
                   capture_output=True,
                   timeout=120)
    return pki


# -- the measurement rounds ------------------------------------------------------------------

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
            if phase.server == "lkm":
                before = await refill(target)
                syncs = await sync_total(target)
            waited = await quiet.wait()
            run = await drive(target, phase.workload, phase.concurrency, args.seconds,
                              args.warmup)
            run["waited_for_quiet_s"] = waited
            if phase.server == "lkm":
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
                for server, names in (("bare", BARE_BODIES), ("lkm", WORKLOADS)):
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
        if server == "lkm":
            ceiling = phases.get((transport, "bare", CEILING_BODY[workload], concurrency))
            row["ceiling_body"] = CEILING_BODY[workload]
            row["ceiling_rps"] = ceiling.median("rps") if ceiling else math.nan
            row["ratio"] = row["rps"] / row["ceiling_rps"] if ceiling else math.nan
            if ceiling:
                row["ratio_runs"] = [r["rps"] / b["rps"] for r, b in zip(phase.runs, ceiling.runs)]
        rows.append(row)
    order = {"http": 0, "mtls": 1}
    rows.sort(key=lambda r: (order.get(r["transport"], 9), r["concurrency"],
                             r["server"] != "bare", WORKLOADS.index(r["workload"])))
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
              "other CPU %")


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
        ))
    return out


# -- profiling ------------------------------------------------------------------------------------

HOP_SELF_PIPE = ("_read_from_self", "_process_self_data", "_write_to_self",
                 "call_soon_threadsafe")
CATEGORIES = (  # (name, predicate on (file, function)); the first that matches wins
    ("event loop waiting (epoll: idle, or waiting for the aiosqlite thread)",
     lambda f, n: "poll' of 'select.epoll" in n),
    ("aiosqlite thread hops (main-thread side: submit, wake the thread, self-pipe, resume)",
     lambda f, n: "aiosqlite" in f or "queue.py" in f or "SimpleQueue" in n
     or any(h in n for h in HOP_SELF_PIPE)),
    ("process start-up (imports, compiling regexes)",
     lambda f, n: "importlib" in f or "/re/" in f or n.startswith((
         "<built-in method builtins.compile", "<built-in method marshal",
         "<built-in method _imp", "<built-in method builtins.exec",
         "<built-in method builtins.__build_class__", "<built-in method io.open_code",
         "<built-in method posix.stat", "<method 'read' of '_io.BufferedReader'"))),
    ("TLS (ssl module, _ssl read/write/handshake)",
     lambda f, n: f.endswith("/ssl.py") or "_ssl._SSLSocket" in n or "of '_ssl." in n
     or "sslproto.py" in f),
    ("per-request access log line (logging, NodeLog in nodes/observability.py, stderr write)",
     lambda f, n: "/logging/" in f or ("nodes/observability.py" in f and any(
         w in n for w in ("process", "_field", "bind", "<genexpr>", "__init__")))
     or "TextIOWrapper" in n or "time.strftime" in n or "time.localtime" in n),
    ("metrics (prometheus_client, NodeMetrics middleware in nodes/observability.py)",
     lambda f, n: "prometheus_client" in f or "nodes/observability.py" in f),
    ("client-certificate CN parsing (nodes/pki.py, cryptography x509)",
     lambda f, n: "nodes/pki.py" in f or "cryptography" in f or "load_der_x509" in n
     or "x509" in n.lower()),
    ("JSON (json module, _json)", lambda f, n: "/json/" in f or "_json" in n),
    ("base64 (base64, binascii)", lambda f, n: "base64.py" in f or "binascii" in n),
    ("actor hop (simulator/actor.py)", lambda f, n: "simulator/actor.py" in f),
    ("api handlers + error middleware (nodes/api.py)", lambda f, n: "nodes/api.py" in f),
    ("LKM actor logic (nodes/lkm.py)", lambda f, n: "nodes/lkm.py" in f),
    ("key store (nodes/keystore.py)", lambda f, n: "nodes/keystore.py" in f),
    ("aiohttp (server, parser, responses, multidict, yarl)",
     lambda f, n: "aiohttp" in f or "multidict" in f or "yarl" in f or "propcache" in f),
    ("asyncio machinery (tasks, futures, handles, transports)",
     lambda f, n: "asyncio" in f or "_asyncio" in n or "selector_events" in f
     or "selectors.py" in f or "_contextvars.Context" in n or "weakrefset" in f),
    ("socket send/recv", lambda f, n: "socket" in n),
)


def _func_name(key: tuple[str, int, str]) -> tuple[str, str]:
    file, line, name = key
    return file, (f"{name}" if file == "~" else f"{Path(file).name}:{line}({name})")


def summarise_profile(path: Path, units: int) -> dict[str, Any]:
    stats = pstats.Stats(str(path))
    raw = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in raw.values())
    by_category: dict[str, float] = {}
    top = []
    for key, (cc, nc, tt, ct, _callers) in raw.items():
        file, label = _func_name(key)
        category = next((c for c, pred in CATEGORIES if pred(file, key[2] if file == "~" else
                                                              label)), "other")
        by_category[category] = by_category.get(category, 0.0) + tt
        top.append((tt, ct, nc, label, file))
    top.sort(reverse=True)

    def calls(predicate: Callable[[str, str], bool]) -> int:
        return sum(v[1] for k, v in raw.items() if predicate(k[0], k[2]))

    def cum(predicate: Callable[[str, str], bool]) -> float:
        return max((v[3] for k, v in raw.items() if predicate(k[0], k[2])), default=0.0)

    hops = calls(lambda f, n: "aiosqlite" in f and n == "set_result")
    asks = calls(lambda f, n: "simulator/actor.py" in f and n == "put")
    named = {
        "json.dumps": cum(lambda f, n: f.endswith("json/__init__.py") and n == "dumps"),
        "json.loads": cum(lambda f, n: f.endswith("json/__init__.py") and n == "loads"),
        "base64.b64encode": cum(lambda f, n: f.endswith("base64.py") and n == "b64encode"),
        "common_name_from_der": cum(lambda f, n: "nodes/pki.py" in f
                                    and n == "common_name_from_der"),
        "caller_of": cum(lambda f, n: "nodes/api.py" in f and n == "caller_of"),
        "keys_body": cum(lambda f, n: "nodes/api.py" in f and n == "keys_body"),
        "json_response": cum(lambda f, n: "web_response.py" in f and n == "json_response"),
        "error_middleware": cum(lambda f, n: "nodes/api.py" in f and n == "error_middleware"),
        "LocalKeyManager._enc_keys": cum(lambda f, n: "nodes/lkm.py" in f and n == "_enc_keys"),
        "ActorSystem._handle": cum(lambda f, n: "simulator/actor.py" in f and n == "_handle"),
        "KeyStore.reserve": cum(lambda f, n: "nodes/keystore.py" in f and n == "reserve"),
        "NodeMetrics._record (metrics + access log, per request)":
            cum(lambda f, n: "nodes/observability.py" in f and n == "_record"),
        "the access log line (LoggerAdapter.info)":
            cum(lambda f, n: f.endswith("logging/__init__.py") and n == "info"),
        "aiosqlite Connection._execute (submit + resume)":
            cum(lambda f, n: "aiosqlite/core.py" in f and n == "_execute"),
        "SimpleQueue.put_nowait (wakes the db thread)":
            cum(lambda f, n: "SimpleQueue" in n and "put_nowait" in n),
        "_read_from_self (self-pipe wake-ups)":
            cum(lambda f, n: "selector_events.py" in f and n == "_read_from_self"),
        "aiosqlite set_result (resolve the hop's future)":
            cum(lambda f, n: "aiosqlite/core.py" in f and n == "set_result"),
    }
    hop_overhead = (named["aiosqlite Connection._execute (submit + resume)"]
                    + named["_read_from_self (self-pipe wake-ups)"]
                    + named["aiosqlite set_result (resolve the hop's future)"])
    busy = total - sum(v for k, v in by_category.items() if k.startswith("event loop waiting"))
    return {
        "file": str(path), "profiled_wall_s": total, "busy_s": busy, "units": units,
        "busy_us_per_unit": busy / units * 1e6 if units else math.nan,
        "aiosqlite_hops": hops, "aiosqlite_hops_per_unit": hops / units if units else math.nan,
        "hop_overhead_pct_of_busy": 100 * hop_overhead / busy,
        "hop_overhead_us_per_unit": hop_overhead / units * 1e6 if units else math.nan,
        "actor_messages": asks,
        "categories_pct": {k: 100 * v / total for k, v in
                           sorted(by_category.items(), key=lambda kv: -kv[1])},
        "categories_pct_of_busy": {k: 100 * v / busy for k, v in
                                   sorted(by_category.items(), key=lambda kv: -kv[1])
                                   if not k.startswith("event loop waiting")},
        "cumulative_pct": {k: 100 * v / total for k, v in named.items()},
        "cumulative_us_per_unit": {k: v / units * 1e6 if units else math.nan
                                   for k, v in named.items()},
        "top_self": [{"function": label, "file": file, "self_pct": 100 * tt / total,
                      "cum_pct": 100 * ct / total, "calls": nc,
                      "calls_per_unit": nc / units if units else math.nan}
                     for tt, ct, nc, label, file in top[:25]],
    }


def profile_text(transport: str, summary: dict[str, Any], load: dict[str, Any],
                 fingerprint: str) -> str:
    served = SOURCE.get("label") or f"commit {commit()}"
    head = (f"== cProfile of the LKM under enc_8192, c={TARGET_CONCURRENCY}, "
            f"{TRANSPORT_NAMES.get(transport, transport)} ({load['rps']:,.0f} units/s under the "
            f"profiler, {summary['units']} units in the profile; {served}, code fingerprint "
            f"{fingerprint}) ==")
    main = (f"main thread: {summary['profiled_wall_s']:.2f} s profiled, "
            f"{summary['busy_s']:.2f} s busy = {summary['busy_us_per_unit']:.0f} us per unit; "
            f"{summary['aiosqlite_hops_per_unit']:.2f} aiosqlite thread hops per unit; "
            f"{summary['actor_messages'] / max(summary['units'], 1):.2f} actor messages per unit;"
            f" main-thread cost of the hops {summary['hop_overhead_us_per_unit']:.0f} us per unit"
            f" = {summary['hop_overhead_pct_of_busy']:.1f} % of busy time")
    lines = [head, main, "",
             "time by category (self time; % of profiled wall time, % of busy time):"]
    busy = summary["categories_pct_of_busy"]
    for name, pct in summary["categories_pct"].items():
        lines.append(f"  {pct:5.1f} %  {busy.get(name, math.nan):5.1f} %  {name}")
    lines += ["", "cumulative (includes callees; us per unit):"]
    for name, pct in summary["cumulative_pct"].items():
        lines.append(f"  {pct:5.1f} %  {summary['cumulative_us_per_unit'][name]:7.1f} us  {name}")
    lines += ["", "top functions by self time:", "  self %   cum %  calls/unit  function"]
    for f in summary["top_self"]:
        lines.append(f"  {f['self_pct']:6.2f}  {f['cum_pct']:6.2f}  {f['calls_per_unit']:10.2f}  "
                     f"{f['function']}  [{_short_path(f['file'])}]")
    return "\n".join(lines)


def _short_path(file: str) -> str:
    if file == "~":
        return "builtin"
    for marker in ("site-packages/", "lib/python3", str(SOURCE["tree"]) + "/", str(ROOT) + "/"):
        if marker in file:
            return file.split(marker, 1)[1]
    return file


def profile_path(args: argparse.Namespace, transport: str, suffix: str) -> Path:
    """Next to the results file: node_throughput.json -> node_throughput_profile_http.txt."""
    stem = args.out.stem.removesuffix("_profile")
    return args.out.with_name(f"{stem}_profile_{transport}{suffix}")


async def profile(args: argparse.Namespace, work: Path, pki: Path,
                  log: Callable[[str], None]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for transport in args.transport:
        pstats_path = profile_path(args, transport, ".pstats")
        pstats_path.unlink(missing_ok=True)
        # register (20,000 keys generated) on an unprofiled node, then profile a node that
        # opens the same file, so that the profile holds the load and little else
        db = f"lkm-profile-{transport}"
        server, target = start_lkm(f"{db}-setup", transport, work, pki, db=db)
        try:
            await register(target)
        finally:
            server.stop()
        await Quiet(args.quiet_threshold, min(args.quiet_budget, 120.0), log).wait()
        fingerprint = tree_fingerprint(root=SOURCE["tree"])
        server, target = start_lkm(db, transport, work, pki, profile_to=pstats_path, db=db)
        try:
            load = await drive(target, "enc_8192", TARGET_CONCURRENCY, args.profile_seconds,
                               args.warmup)
        finally:
            code = server.stop()
        if not pstats_path.exists():
            raise RuntimeError(f"the profiled server wrote no profile (exit {code}); see "
                               f"{server.log_path}")
        summary = summarise_profile(pstats_path, load["units_total"])
        text = profile_text(transport, summary, load, fingerprint)
        profile_path(args, transport, ".txt").write_text(text + "\n")
        log(text)
        out[transport] = {"load": load, "code_fingerprint": fingerprint, **summary}
    return out


# -- the DB work of one enc_keys, with and without thread hops -------------------------------------

async def db_experiment(work: Path, n: int = 2000) -> dict[str, float]:
    """What one enc_keys costs in the key store alone, today and done in one thread hop.

    ``today``: the store calls ``LocalKeyManager._enc_keys`` made at commit 4031563 (exists,
    pool_status, reserve, pool_status), each an aiosqlite hop (counted). ``sync``: the same
    statements (the store's own POOL_STATUS and RESERVE_WHOLE SQL) in one plain function on a
    ``sqlite3`` connection;
    ``one_hop``: that function run in a one-thread executor, one hop per request; ``batch16``:
    16 requests per hop. No HTTP, no actor: only the store, on the same kind of file.
    """
    import secrets
    import sqlite3
    from concurrent.futures import ThreadPoolExecutor

    from nodes.keynode.keystore import POOL_STATUS, RESERVE_WHOLE, KeyStore

    path = work / "db-experiment.db"
    store = await KeyStore.open(path)
    try:
        for sae in (ALICE, BOB):
            await store.register(sae, f"{sae}@example.com", sae, POOL_KEYS, POOL_KEYS // 10,
                                 8192, [secrets.token_bytes(1024) for _ in range(POOL_KEYS)],
                                 time.time())
        db = store._db  # the experiment times one bare hop on the store's own thread
        hops = _count_hops(db)
        started = time.perf_counter()
        for _ in range(n):
            await db.execute_fetchall("SELECT 1")
        hop = (time.perf_counter() - started) / n
        started = time.perf_counter()
        for i in range(n):
            master, owner = DIRECTIONS[i % 2]
            await store.exists(master)
            await store.pool_status(owner)
            await store.reserve(owner, master, owner, 1, 8192, time.time())
            await store.pool_status(owner)
        today = (time.perf_counter() - started) / n
        today_hops = (hops() - n) / n  # minus the n bare hops above
    finally:
        await store.close()

    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=5000",
                   "secure_delete=ON", "foreign_keys=ON"):
        conn.execute(f"PRAGMA {pragma}")

    def enc(i: int) -> list[Any]:
        master, owner = DIRECTIONS[i % 2]
        now = time.time()
        conn.execute("SELECT 1 FROM users WHERE sae_id = ?", (master,)).fetchall()
        conn.execute(POOL_STATUS + " WHERE u.sae_id = ?", (owner,)).fetchall()
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("SELECT key_size_bits FROM key_pools WHERE sae_id = ?", (owner,)).fetchall()
        rows = conn.execute(RESERVE_WHOLE, {"master": master, "slave": owner, "now": now,
                                            "owner": owner, "size": 8192, "n": 1}).fetchall()
        conn.execute("UPDATE key_pools SET available_keys = available_keys - 1, available_bits ="
                     " available_bits - 8192, used_keys = used_keys + 1 WHERE sae_id = ?",
                     (owner,))
        conn.execute("UPDATE users SET last_activity = ? WHERE sae_id IN (?, ?)",
                     (now, owner, master))
        conn.execute("COMMIT")
        conn.execute(POOL_STATUS + " WHERE u.sae_id = ?", (owner,)).fetchall()
        return rows

    try:
        started = time.perf_counter()
        for i in range(n):
            enc(i)
        sync = (time.perf_counter() - started) / n
        loop = asyncio.get_running_loop()
        with ThreadPoolExecutor(1) as executor:
            started = time.perf_counter()
            for i in range(n):
                await loop.run_in_executor(executor, enc, i)
            one_hop = (time.perf_counter() - started) / n
            started = time.perf_counter()
            for i in range(0, n, 16):
                await loop.run_in_executor(executor, lambda i=i: [enc(i + j) for j in range(16)])
            batch16 = (time.perf_counter() - started) / (len(range(0, n, 16)) * 16)
    finally:
        conn.close()
    return {"bare_hop_us": hop * 1e6, "today_us": today * 1e6, "today_hops": today_hops,
            "sync_us": sync * 1e6,
            "one_hop_us": one_hop * 1e6, "batch16_us": batch16 * 1e6}


def _count_hops(db: Any) -> Callable[[], int]:
    """Count the calls queued to this aiosqlite connection's thread from now on."""
    calls = [0]
    original = db._execute

    async def counting(fn: Any, *args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return await original(fn, *args, **kwargs)

    db._execute = counting
    return lambda: calls[0]


def db_experiment_process(work: Path) -> dict[str, float]:
    """Run :func:`db_experiment` in a child process that imports the served tree's ``nodes``."""
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--db-experiment",
                          str(work), "--source", str(SOURCE["tree"])], cwd=SOURCE["tree"],
                         capture_output=True, text=True, check=True, timeout=600)
    return json.loads(out.stdout.strip().splitlines()[-1])


def db_experiment_text(r: dict[str, float]) -> str:
    return "\n".join([
        "key-store work of one enc_keys (8192 bits), no HTTP, no actor (mean per request):",
        f"  one bare aiosqlite hop (SELECT 1)               {r['bare_hop_us']:6.0f} us",
        (f"  4 store calls (exists, pool_status, reserve,\n"
         f"    pool_status), as _enc_keys made them at 4031563 {r['today_us']:6.0f} us "
         f"({r.get('today_hops', math.nan):.0f} hops; at most {1e6 / r['today_us']:,.0f} "
         "enc_keys/s through one actor)"),
        f"  same SQL in one function, no hop                {r['sync_us']:6.0f} us",
        (f"  same SQL in one function, one hop per request   {r['one_hop_us']:6.0f} us "
         f"(at most {1e6 / r['one_hop_us']:,.0f}/s)"),
        f"  16 requests per hop                             {r['batch16_us']:6.0f} us per request",
    ])


# -- main ---------------------------------------------------------------------------------------

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
    phases = len(args.transport) * len(args.concurrency) * (len(BARE_BODIES) + len(WORKLOADS))
    estimate = 0 if args.profile_only else phases * args.repeat * (args.seconds + args.warmup + 0.5)
    if args.profile:
        estimate += len(args.transport) * (args.profile_seconds + args.warmup + 10)
    print(f"node_throughput: {0 if args.profile_only else phases} phases x {args.repeat} rounds"
          f"{', then the profile' if args.profile else ''}: about {estimate / 60:.1f} min",
          flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    if args.ref:  # pinned now: HEAD may move while the run goes on
        args.ref = subprocess.run(
            ["git", "rev-parse", "--verify", "--quiet", f"{args.ref}^{{commit}}"], cwd=ROOT,
            check=True, capture_output=True, text=True).stdout.strip()
    if args.tree and args.ref:
        parser.error("--tree and --ref exclude each other")
    tree_before, load_before = tree_fingerprint(), os.getloadavg()
    result = asyncio.run(run_all(args, lambda line: print(line, flush=True)))
    tree_after = tree_fingerprint()
    if args.ref or args.tree:  # the served tree, not the work tree
        tree_before = result.pop("ref_fingerprint")
        tree_after = tree_fingerprint(root=args.tree) if args.tree else tree_before
    report = {"benchmark": "node_throughput",
              "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
              "commit": f"tree {args.tree}" if args.tree else commit(args.ref), "ref": args.ref,
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


if __name__ == "__main__":
    sys.exit(main())
