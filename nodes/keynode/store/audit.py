"""Counts for invariant checks, recounted from the key rows themselves."""

from __future__ import annotations

import sqlite3

from nodes.keynode.store.keys import KeyState
from nodes.keynode.store.schema import fetchall

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
    counts["duplicate_material"] = fetchall(
        db, "SELECT COUNT(*) FROM (SELECT key_data FROM quantum_keys WHERE key_data IS NOT NULL"
            " GROUP BY key_data HAVING COUNT(*) > 1)")[0][0]
    pools = fetchall(db, COUNTS_FROM_ROWS)
    counts["counter_mismatches"] = sum(1 for row in pools if tuple(row[1:4]) != tuple(row[4:7]))
    return counts


def shipped_to(db: sqlite3.Connection) -> dict[str, list[str]]:
    """Key IDs in state SHIPPED, by the LKM they were shipped to (a relay's leftovers show
    here: every one of them must be in that LKM's slice)."""
    shipped: dict[str, list[str]] = {}
    for key_id, lkm in fetchall(db, "SELECT key_id, shipped_to FROM quantum_keys WHERE"
                                    f" status = {KeyState.SHIPPED:d} ORDER BY seq"):
        shipped.setdefault(lkm, []).append(key_id)
    return shipped
