"""The LKM under cProfile: started under ``python -m cProfile``, loaded with enc_8192 at
concurrency 32, stopped with SIGINT; its profile summarised by category and by named function.

cProfile sees the main thread only: a store transaction runs on aiosqlite's thread, so what the
key store costs here is its main-thread side (building the transaction, the hop, the resume).
"""

from __future__ import annotations

import argparse
import math
import pstats
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import ROOT, commit, tree_fingerprint

from .client import drive
from .constants import SOURCE, TARGET_CONCURRENCY, TRANSPORT_NAMES
from .rounds import Quiet
from .servers import register, start_lkm

HOP_SELF_PIPE = ("_read_from_self", "_process_self_data", "_write_to_self",
                 "call_soon_threadsafe")
OBSERVABILITY, API, PKI = (f"nodes/server/{m}.py" for m in ("observability", "api", "pki"))
STORE = "nodes/keynode/store/"  # the KeyStore and its transaction functions
LKM_FILES = tuple(f"nodes/keynode/{m}.py" for m in ("lkm", "requests", "sync", "worker"))
ACTOR_FILES = tuple(f"simulator/{m}.py" for m in ("actor", "system", "activity"))
REQUESTS, SYSTEM = "nodes/keynode/requests.py", "simulator/system.py"
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
    ("per-request access log line (logging, NodeLog in nodes/server/observability.py, stderr "
     "write)",
     lambda f, n: "/logging/" in f or (OBSERVABILITY in f and any(
         w in n for w in ("process", "_field", "bind", "<genexpr>", "__init__")))
     or "TextIOWrapper" in n or "time.strftime" in n or "time.localtime" in n),
    ("metrics (prometheus_client, NodeMetrics middleware in nodes/server/observability.py)",
     lambda f, n: "prometheus_client" in f or OBSERVABILITY in f),
    ("client-certificate CN parsing (nodes/server/pki.py, cryptography x509)",
     lambda f, n: PKI in f or "cryptography" in f or "load_der_x509" in n
     or "x509" in n.lower()),
    ("JSON (json module, _json)", lambda f, n: "/json/" in f or "_json" in n),
    ("base64 (base64, binascii)", lambda f, n: "base64.py" in f or "binascii" in n),
    ("actor hop (simulator/actor.py, system.py, activity.py)",
     lambda f, n: any(a in f for a in ACTOR_FILES)),
    ("api handlers + error middleware (nodes/server/api.py)", lambda f, n: API in f),
    ("LKM actor logic (nodes/keynode/lkm.py, requests.py, sync.py, worker.py)",
     lambda f, n: any(m in f for m in LKM_FILES)),
    ("key store, main-thread side (nodes/keynode/store/)", lambda f, n: STORE in f),
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
    asks = calls(lambda f, n: SYSTEM in f and n == "put")  # Cell.put: one per message
    named = {
        "json.dumps": cum(lambda f, n: f.endswith("json/__init__.py") and n == "dumps"),
        "json.loads": cum(lambda f, n: f.endswith("json/__init__.py") and n == "loads"),
        "base64.b64encode": cum(lambda f, n: f.endswith("base64.py") and n == "b64encode"),
        "common_name_from_der": cum(lambda f, n: PKI in f and n == "common_name_from_der"),
        "caller_of": cum(lambda f, n: API in f and n == "caller_of"),
        "keys_body": cum(lambda f, n: API in f and n == "keys_body"),
        "json_response": cum(lambda f, n: "web_response.py" in f and n == "json_response"),
        "error_middleware": cum(lambda f, n: API in f and n == "error_middleware"),
        # the checks, the transaction and the reply of enc_keys (the store hop is KeyStore.many's);
        # the "reply" that counts is plan's, which calls EncKeysRequest.reply
        "EncKeysRequest (requests.plan + reply)":
            cum(lambda f, n: REQUESTS in f and n == "plan")
            + cum(lambda f, n: REQUESTS in f and n == "reply"),
        "ActorSystem._handle + _handle_batch":
            cum(lambda f, n: SYSTEM in f and n == "_handle")
            + cum(lambda f, n: SYSTEM in f and n == "_handle_batch"),
        # one hop for the reservations of a batch (delivery.reservation's transaction runs on
        # aiosqlite's thread, which cProfile does not see)
        "KeyStore.many (the reservation's hop)":
            cum(lambda f, n: f"{STORE}connection.py" in f and n == "many"),
        "NodeMetrics._record (metrics + access log, per request)":
            cum(lambda f, n: OBSERVABILITY in f and n == "_record"),
        "the access log line (LoggerAdapter.log)":
            cum(lambda f, n: f.endswith("logging/__init__.py") and n in ("info", "log")),
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

