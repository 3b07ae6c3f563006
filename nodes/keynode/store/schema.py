"""The tables of an LKM's SQLite file and the settings each connection starts with."""

from __future__ import annotations

import sqlite3
from typing import Any

from nodes.keynode.store.keys import KeyState
from nodes.keynode.store.sealing import check_master_key

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS users (
    sae_id TEXT PRIMARY KEY,
    user_email TEXT UNIQUE,
    display_name TEXT,
    registered_at REAL NOT NULL,
    is_active INTEGER NOT NULL DEFAULT 1,
    last_activity REAL,
    home_lkm TEXT
);
CREATE TABLE IF NOT EXISTS key_pools (
    sae_id TEXT PRIMARY KEY REFERENCES users(sae_id) ON DELETE CASCADE,
    pool_size_limit INTEGER NOT NULL,
    low_threshold INTEGER NOT NULL,
    key_size_bits INTEGER NOT NULL,
    last_sync_time REAL,
    available_keys INTEGER NOT NULL DEFAULT 0,
    available_bits INTEGER NOT NULL DEFAULT 0,
    used_keys INTEGER NOT NULL DEFAULT 0,
    home_lkm TEXT
);
CREATE TABLE IF NOT EXISTS key_sequences (
    sae_id TEXT PRIMARY KEY,
    next_seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS quantum_keys (
    id INTEGER PRIMARY KEY,
    key_id TEXT NOT NULL UNIQUE,
    sae_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    key_data BLOB,
    size_bits INTEGER NOT NULL,
    status INTEGER NOT NULL DEFAULT {KeyState.AVAILABLE:d},
    created_at REAL NOT NULL,
    delivered_to_sae_id TEXT,
    slave_sae_id TEXT,
    delivered_at REAL,
    consumed_at REAL,
    shipped_to TEXT
);
CREATE INDEX IF NOT EXISTS quantum_keys_available ON quantum_keys(sae_id, seq)
    WHERE status = {KeyState.AVAILABLE:d};
CREATE INDEX IF NOT EXISTS quantum_keys_owner ON quantum_keys(sae_id, status);
CREATE TABLE IF NOT EXISTS sync_logs (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    reason TEXT NOT NULL,
    sae_id TEXT,
    keys_requested INTEGER NOT NULL,
    keys_received INTEGER NOT NULL,
    duration_s REAL NOT NULL,
    outcome TEXT NOT NULL
);
"""

#: served nodes: a WAL journal, synced at checkpoints; erased material overwritten on disk.
#: The busy timeout comes first: switching to WAL takes a lock, and without the timeout set a
#: second connection opening the same fresh file at that moment failed at once ("locked")
SERVED_PRAGMAS = ("busy_timeout=5000", "journal_mode=WAL", "synchronous=NORMAL",
                  "secure_delete=ON", "foreign_keys=ON")
#: a simulation's files are its own: one connection each, and a simulated crash stops the actor,
#: not the process, so every committed transaction survives it without an fsync or an on-disk
#: journal; the file is locked while the run holds it open (readable afterwards).
SIMULATED_PRAGMAS = (*SERVED_PRAGMAS, "journal_mode=MEMORY", "locking_mode=EXCLUSIVE",
                     "synchronous=OFF")
#: A simulation may hold a thousand stores open, each with a page cache that fills as the run
#: goes: they share a budget (64 MiB), 512 KiB each up to 128 stores, never under 128 KiB. At
#: 1,000 LKMs, 128 KiB instead of 512 took a day's peak from 3,230 to 2,839 MiB (decision 65).
CACHE_BUDGET_KIB, CACHE_MAX_KIB, CACHE_MIN_KIB = 64 * 1024, 512, 128


def simulated_cache_kib(stores: int) -> int:
    """Each store's page cache when a simulation holds ``stores`` of them."""
    return max(CACHE_MIN_KIB, min(CACHE_MAX_KIB, CACHE_BUDGET_KIB // max(1, stores)))


def prepare(db: sqlite3.Connection, pragmas: tuple[str, ...],
            master_key: bytes | None = None) -> None:
    """Settings, then the file's seal (refused if it does not match ``master_key``; see
    :mod:`.sealing`), then the tables."""
    for pragma in pragmas:
        db.execute(f"PRAGMA {pragma}")
    check_master_key(db, master_key)
    db.executescript(SCHEMA)


def fetchall(db: sqlite3.Connection, sql: str, parameters: Any = ()) -> list[Any]:
    return db.execute(sql, parameters).fetchall()


def marks(count: int) -> str:
    """``?,?,...`` for an IN list of ``count`` values."""
    return ",".join("?" * count)
