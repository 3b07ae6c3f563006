"""The key node room: one LKM, its per-user key pools and their SQLite store, ETSI 014 semantics
and the hybrid sync policy. Knows nothing of HTTP, of the KM network or of scenarios."""
