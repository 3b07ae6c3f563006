"""Users and their pools: registration, remote slices, pool counters and fresh key rows.

A pool's counts (available keys and bits, keys used) live in ``key_pools`` and move in the same
transaction as the key rows they count (:func:`count`), so they cannot drift;
:mod:`.audit` recounts them from the rows.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Sequence

from nodes.keynode.errors import AlreadyRegistered
from nodes.keynode.store.connection import Txn
from nodes.keynode.store.keys import key_id_for
from nodes.keynode.store.schema import fetchall
from nodes.keynode.store.sealing import sealer

POOLS = " FROM users u JOIN key_pools p ON p.sae_id = u.sae_id"
ACTIVE = " WHERE u.is_active = 1 ORDER BY u.sae_id"  # every pool listed, in SAE order
POOL_STATUS = """
SELECT u.sae_id, u.user_email, u.display_name, u.registered_at, p.pool_size_limit, p.low_threshold,
       p.key_size_bits, p.last_sync_time, p.available_keys, p.available_bits, p.used_keys,
       p.home_lkm""" + POOLS


@dataclass(frozen=True, slots=True)
class PoolStatus:
    sae_id: str
    user_email: str | None
    display_name: str | None
    registered_at: float
    pool_size_limit: int
    low_threshold: int
    key_size_bits: int
    last_sync_time: float | None
    available_keys: int
    available_bits: int
    used_keys: int
    home_lkm: str | None = None

    @property
    def is_slice(self) -> bool:
        return self.home_lkm is not None

    @property
    def total_keys(self) -> int:
        return self.available_keys + self.used_keys


def register(sae_id: str, user_email: str | None, display_name: str | None,
             pool_size_limit: int, low_threshold: int, key_size_bits: int,
             materials: Sequence[bytes], now: float) -> Txn[None]:
    """A user homed here, with a pool filled with ``materials`` (400 if the ID or e-mail is
    taken)."""
    def txn(db: sqlite3.Connection) -> None:
        rows = fetchall(db, "SELECT sae_id, user_email FROM users WHERE sae_id = ? OR"
                            " user_email = ?", (sae_id, user_email))
        for row in rows:
            field = "sae_id" if row[0] == sae_id else "user_email"
            raise AlreadyRegistered(f"User already registered ({field} exists)", field=field)
        db.execute("INSERT INTO users(sae_id, user_email, display_name, registered_at,"
                   " last_activity) VALUES (?, ?, ?, ?, ?)",
                   (sae_id, user_email, display_name, now, now))
        db.execute("INSERT INTO key_pools(sae_id, pool_size_limit, low_threshold,"
                   " key_size_bits) VALUES (?, ?, ?, ?)",
                   (sae_id, pool_size_limit, low_threshold, key_size_bits))
        insert_available(db, sae_id, materials, key_size_bits, now)
    return txn


def add_remote(sae_id: str, user_email: str | None, home_lkm: str, slice_limit: int,
               low_threshold: int, key_size_bits: int, now: float) -> Txn[None]:
    """Know a user homed at ``home_lkm`` and give it an (empty) slice here; idempotent."""
    def txn(db: sqlite3.Connection) -> None:
        db.execute("INSERT OR IGNORE INTO users(sae_id, user_email, display_name,"
                   " registered_at, home_lkm) VALUES (?, ?, ?, ?, ?)",
                   (sae_id, None, user_email, now, home_lkm))
        db.execute("INSERT OR IGNORE INTO key_pools(sae_id, pool_size_limit, low_threshold,"
                   " key_size_bits, home_lkm) VALUES (?, ?, ?, ?, ?)",
                   (sae_id, slice_limit, low_threshold, key_size_bits, home_lkm))
    return txn


def status(sae_id: str) -> Txn[PoolStatus | None]:
    """The pool (or slice) of ``sae_id`` here, or None."""
    def txn(db: sqlite3.Connection) -> PoolStatus | None:
        rows = fetchall(db, POOL_STATUS + " WHERE u.sae_id = ?", (sae_id,))
        return PoolStatus(*rows[0]) if rows else None
    return txn


def all_pools(db: sqlite3.Connection) -> list[PoolStatus]:
    rows = fetchall(db, POOL_STATUS + ACTIVE)
    return [PoolStatus(*row) for row in rows]


def levels(db: sqlite3.Connection) -> list[tuple[str, int]]:
    """``(sae_id, available_keys)`` of every pool, in the order of :func:`all_pools`."""
    return fetchall(db, "SELECT u.sae_id, p.available_keys" + POOLS + ACTIVE)


def local_users(db: sqlite3.Connection) -> set[str]:
    """The users homed here (remote users only have slices here)."""
    return {row[0] for row in fetchall(db, "SELECT sae_id FROM users WHERE home_lkm IS NULL")}


def add_keys(sae_id: str, materials: Sequence[bytes], now: float) -> Txn[int]:
    """Append fresh key material to a pool; the number of keys added (0: no such pool)."""
    def txn(db: sqlite3.Connection) -> int:
        rows = fetchall(db, "SELECT key_size_bits FROM key_pools WHERE sae_id = ?", (sae_id,))
        if not rows:
            return 0
        insert_available(db, sae_id, materials, rows[0][0], now)
        return len(materials)
    return txn


def delete_user(sae_id: str) -> Txn[int]:
    """Remove a user, its pool and every key row (material overwritten on disk)."""
    def txn(db: sqlite3.Connection) -> int:
        deleted = db.execute("DELETE FROM quantum_keys WHERE sae_id = ?", (sae_id,)).rowcount
        db.execute("DELETE FROM key_pools WHERE sae_id = ?", (sae_id,))
        db.execute("DELETE FROM users WHERE sae_id = ?", (sae_id,))
        return deleted
    return txn


def insert_available(db: sqlite3.Connection, sae_id: str, materials: Sequence[bytes],
                     size_bits: int, now: float) -> None:
    first, seal = take_seqs(db, sae_id, len(materials)), sealer(db).seal
    ids = [key_id_for(sae_id, first + i) for i in range(len(materials))]
    db.executemany(
        "INSERT INTO quantum_keys(key_id, sae_id, seq, key_data, size_bits, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        [(key_id, sae_id, first + i, seal(key_id, material), size_bits, now)
         for i, (key_id, material) in enumerate(zip(ids, materials))])
    count(db, sae_id, len(materials), len(materials) * size_bits, 0)


def count(db: sqlite3.Connection, sae_id: str, keys: int, bits: int, used: int) -> None:
    """Move a pool's counters by the given deltas (inside the caller's transaction)."""
    db.execute(
        "UPDATE key_pools SET available_keys = available_keys + ?,"
        " available_bits = available_bits + ?, used_keys = used_keys + ? WHERE sae_id = ?",
        (keys, bits, used, sae_id))


def take_seqs(db: sqlite3.Connection, sae_id: str, n: int) -> int:
    """Reserve ``n`` sequence numbers; IDs are never reused, not even after a delete."""
    rows = fetchall(db,
        "INSERT INTO key_sequences(sae_id, next_seq) VALUES (?, ? + 1)"
        " ON CONFLICT(sae_id) DO UPDATE SET next_seq = next_seq + ?"
        " RETURNING next_seq", (sae_id, n, n))
    return int(rows[0][0]) - n
