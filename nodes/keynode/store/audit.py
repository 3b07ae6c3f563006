"""Counts for invariant checks, recounted from the key rows themselves."""

from __future__ import annotations

import sqlite3
from collections import Counter

from nodes.keynode.store.keys import KeyState
from nodes.keynode.store.schema import fetchall
from nodes.keynode.store.sealing import Plain, sealer

COUNTS_FROM_ROWS = f"""
SELECT p.sae_id, p.available_keys, p.available_bits, p.used_keys,
       COALESCE(SUM(CASE WHEN k.status = {KeyState.AVAILABLE:d}
                         THEN k.size_bits / p.key_size_bits END), 0),
       COALESCE(SUM(CASE WHEN k.status = {KeyState.AVAILABLE:d} THEN k.size_bits END), 0),
       COALESCE(SUM(k.status != {KeyState.AVAILABLE:d}), 0)
  FROM key_pools p LEFT JOIN quantum_keys k ON k.sae_id = p.sae_id
 GROUP BY p.sae_id
"""


def audit(db: sqlite3.Connection) -> dict[str, int]:
    """Rows by state (``status_<n>``), key material stored twice, and pools whose counters
    differ from a recount of their rows."""
    rows = fetchall(db, "SELECT status, COUNT(*) FROM quantum_keys GROUP BY status")
    counts = {f"status_{status}": n for status, n in rows}
    counts["duplicate_material"] = duplicate_material(db)
    pools = fetchall(db, COUNTS_FROM_ROWS)
    counts["counter_mismatches"] = sum(1 for row in pools if tuple(row[1:4]) != tuple(row[4:7]))
    return counts


def duplicate_material(db: sqlite3.Connection) -> int:
    """How many materials are stored more than once. Sealed values never compare equal (each
    has its own nonce), so a sealed store opens them all and compares the material itself."""
    stored_as = sealer(db)
    if isinstance(stored_as, Plain):
        return int(fetchall(
            db, "SELECT COUNT(*) FROM (SELECT key_data FROM quantum_keys WHERE key_data IS NOT"
                " NULL GROUP BY key_data HAVING COUNT(*) > 1)")[0][0])
    materials = Counter(stored_as.open(key_id, stored) for key_id, stored in fetchall(
        db, "SELECT key_id, key_data FROM quantum_keys WHERE key_data IS NOT NULL"))
    return sum(1 for n in materials.values() if n > 1)


def shipped_to(db: sqlite3.Connection) -> dict[str, list[str]]:
    """Key IDs in state SHIPPED, by the LKM they were shipped to (a relay's leftovers show
    here: every one of them must be in that LKM's slice)."""
    shipped: dict[str, list[str]] = {}
    for key_id, lkm in fetchall(db, "SELECT key_id, shipped_to FROM quantum_keys WHERE"
                                    f" status = {KeyState.SHIPPED:d} ORDER BY seq"):
        shipped.setdefault(lkm, []).append(key_id)
    return shipped
