"""The store-hop experiment: the key-store work of one enc_keys, with and without thread hops.

No HTTP, no actor: only the store (``nodes.keynode.store``) on the same kind of file. It runs
in a child process (``--db-experiment``) that imports the served tree's ``nodes``.
"""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .constants import ALICE, BOB, DIRECTIONS, POOL_KEYS, SCRIPT, SOURCE


async def db_experiment(work: Path, n: int = 2000) -> dict[str, float]:
    """What one enc_keys costs in the key store alone, today and done in one thread hop.

    ``today``: the store calls ``LocalKeyManager._enc_keys`` made at commit 4031563 (exists,
    pool_status, reserve, pool_status), each an aiosqlite hop (counted), made with the store's
    transaction functions: the ``exists`` read of then, ``pools.status``, ``delivery.reservation``
    (in ``BEGIN IMMEDIATE``), ``pools.status``. ``sync``: the same
    statements (the store's own POOL_STATUS and RESERVE_WHOLE SQL) in one plain function on a
    ``sqlite3`` connection;
    ``one_hop``: that function run in a one-thread executor, one hop per request; ``batch16``:
    16 requests per hop. No HTTP, no actor: only the store, on the same kind of file.
    """
    import secrets
    import sqlite3
    from concurrent.futures import ThreadPoolExecutor

    from nodes.keynode import KeyStore
    from nodes.keynode.store import delivery, pools
    from nodes.keynode.store.delivery import RESERVE_WHOLE
    from nodes.keynode.store.pools import POOL_STATUS

    path = work / "db-experiment.db"
    store = await KeyStore.open(path)
    try:
        for sae in (ALICE, BOB):
            await store.run(pools.register(
                sae, f"{sae}@example.com", sae, POOL_KEYS, POOL_KEYS // 10, 8192,
                [secrets.token_bytes(1024) for _ in range(POOL_KEYS)], time.time()))
        db = store._db  # the experiment times one bare hop on the store's own thread
        hops = _count_hops(db)
        started = time.perf_counter()
        for _ in range(n):
            await db.execute_fetchall("SELECT 1")
        hop = (time.perf_counter() - started) / n
        started = time.perf_counter()
        for i in range(n):
            master, owner = DIRECTIONS[i % 2]
            await store.read(_exists(master))
            await store.read(pools.status(owner))
            await store.run(delivery.reservation(owner, master, owner, 1, 8192, time.time()))
            await store.read(pools.status(owner))
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


def _exists(sae_id: str) -> Callable[[Any], bool]:
    """The read ``KeyStore.exists`` made (is ``sae_id`` at home here?); the store has no such
    call any more (the LKM keeps the set of its local users in memory)."""
    def txn(db: Any) -> bool:
        return bool(db.execute("SELECT 1 FROM users WHERE sae_id = ? AND home_lkm IS NULL",
                               (sae_id,)).fetchall())
    return txn


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
    out = subprocess.run([sys.executable, str(SCRIPT), "--db-experiment",
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
