"""The sync log: one row per sync with its reason, keys asked and received, and outcome."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from nodes.keynode.store.connection import Txn
from nodes.keynode.store.schema import fetchall


@dataclass(frozen=True, slots=True)
class SyncStats:
    total: int
    successful: int
    failed: int
    keys_received: int


def record_sync(at: float, reason: str, sae_id: str | None, keys_requested: int,
                keys_received: int, duration_s: float, outcome: str) -> Txn[None]:
    def txn(db: sqlite3.Connection) -> None:
        db.execute("INSERT INTO sync_logs(at, reason, sae_id, keys_requested, keys_received,"
                   " duration_s, outcome) VALUES (?, ?, ?, ?, ?, ?, ?)",
                   (at, reason, sae_id, keys_requested, keys_received, duration_s, outcome))
        if outcome == "ok" and sae_id is not None:
            db.execute("UPDATE key_pools SET last_sync_time = ? WHERE sae_id = ?", (at, sae_id))
    return txn


def sync_stats(db: sqlite3.Connection) -> SyncStats:
    rows = fetchall(db, "SELECT COUNT(*), COALESCE(SUM(outcome = 'ok'), 0),"
                        " COALESCE(SUM(outcome != 'ok'), 0), COALESCE(SUM(keys_received), 0)"
                        " FROM sync_logs")
    return SyncStats(*rows[0])


def last_sync_time(db: sqlite3.Connection) -> float | None:
    value: float | None = fetchall(db, "SELECT MAX(at) FROM sync_logs")[0][0]
    return value
