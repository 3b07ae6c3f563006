"""Slices: keys of a home pool reserved for a slice at another LKM, and the slice's copies.

At the receiver's home LKM, :func:`ship` moves keys (only those above the home pool's own
threshold) to ``SHIPPED`` (the material stays there for
the receiver to read once); :func:`unship` gives back those that never reached the slice. At
the sender's LKM, :func:`store_slice` adds the relayed copies to the receiver's slice.
"""

from __future__ import annotations

import sqlite3
from typing import Sequence

from nodes.keynode.store.connection import Txn
from nodes.keynode.store.keys import Key, KeyState
from nodes.keynode.store.pools import count, take_seqs
from nodes.keynode.store.schema import fetchall, marks
from nodes.keynode.store.sealing import sealer


def ship(owner: str, to_lkm: str, n: int, now: float) -> Txn[list[Key]]:
    """Reserve up to ``n`` whole keys of ``owner``'s home pool for a slice at ``to_lkm``, but
    never below the home pool's own threshold: slices are served from what is above it (the
    *reserve* policy), so the owner's own sends never wait on slices elsewhere."""
    def txn(db: sqlite3.Connection) -> list[Key]:
        pool = fetchall(db, "SELECT key_size_bits, available_keys - low_threshold FROM key_pools"
                            " WHERE sae_id = ? AND home_lkm IS NULL", (owner,))
        allowed = min(n, pool[0][1]) if pool else 0
        if allowed <= 0:
            return []
        rows = fetchall(db,
            f"UPDATE quantum_keys SET status = {KeyState.SHIPPED:d}, shipped_to = ?,"
            " slave_sae_id = sae_id, delivered_at = ? WHERE id IN (SELECT id FROM quantum_keys"
            f" WHERE sae_id = ? AND status = {KeyState.AVAILABLE:d} AND size_bits = ?"
            " ORDER BY seq LIMIT ?) RETURNING seq, key_id, key_data",
            (to_lkm, now, owner, pool[0][0], allowed))
        count(db, owner, -len(rows), -len(rows) * pool[0][0], len(rows))
        unseal = sealer(db).open
        return [Key(key_id, unseal(key_id, data)) for _, key_id, data in sorted(rows)]
    return txn


def unship(owner: str, key_ids: Sequence[str]) -> Txn[int]:
    """Return shipped keys that never reached their slice to the home pool; how many."""
    def txn(db: sqlite3.Connection) -> int:
        rows = fetchall(db,
            f"UPDATE quantum_keys SET status = {KeyState.AVAILABLE:d}, shipped_to = NULL,"
            " slave_sae_id = NULL, delivered_at = NULL"
            f" WHERE status = {KeyState.SHIPPED:d} AND sae_id = ?"
            f" AND key_id IN ({marks(len(key_ids))}) RETURNING size_bits", (owner, *key_ids))
        count(db, owner, len(rows), sum(r[0] for r in rows), -len(rows))
        return len(rows)
    return txn


def store_slice(owner: str, keys: Sequence[Key], now: float) -> Txn[int]:
    """Add keys shipped from the owner's home LKM to the owner's slice here; how many."""
    def txn(db: sqlite3.Connection) -> int:
        pool = fetchall(db, "SELECT key_size_bits FROM key_pools WHERE sae_id = ? AND"
                            " home_lkm IS NOT NULL", (owner,))
        if not pool:
            return 0
        first, seal = take_seqs(db, owner, len(keys)), sealer(db).seal
        db.executemany(
            "INSERT INTO quantum_keys(key_id, sae_id, seq, key_data, size_bits, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [(key.key_id, owner, first + i, seal(key.key_id, key.material),
              len(key.material) * 8, now) for i, key in enumerate(keys)])
        count(db, owner, len(keys), sum(len(k.material) * 8 for k in keys), 0)
        return len(keys)
    return txn
