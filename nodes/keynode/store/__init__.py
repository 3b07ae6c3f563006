"""An LKM's SQLite store: the only SQL in qkdsim, split by concept.

:class:`KeyStore` (:mod:`.connection`) runs transaction functions built by :mod:`.pools` (users,
pools and their counters), :mod:`.delivery` (enc_keys and dec_keys), :mod:`.shipping` (slices),
:mod:`.synclog` and :mod:`.audit`; :mod:`.keys` holds the key states and key IDs, :mod:`.schema`
the tables, :mod:`.sealing` the key material's encryption at rest under a master key.
"""

from nodes.keynode.store import audit, delivery, pools, shipping, synclog
from nodes.keynode.store.connection import KeyStore, Txn
from nodes.keynode.store.keys import Key, KeyState
from nodes.keynode.store.pools import PoolStatus
from nodes.keynode.store.schema import simulated_cache_kib
from nodes.keynode.store.synclog import SyncStats

__all__ = ["Key", "KeyState", "KeyStore", "PoolStatus", "SyncStats", "Txn", "audit",
           "delivery", "pools", "shipping", "simulated_cache_kib", "synclog"]
