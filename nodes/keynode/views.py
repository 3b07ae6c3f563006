"""JSON-ready views of pools for the HTTP surface (pure functions of store records)."""

from __future__ import annotations

from typing import Any

from nodes.keynode.config import NodeConfig
from nodes.keynode.store import PoolStatus


def status_view(config: NodeConfig, pool: PoolStatus, master: str, target_kme: str,
                next_sync_s: float | None) -> dict[str, Any]:
    """The 11 ETSI Status fields, and the pool's own in ``status_extension`` (ETSI's place for
    vendor data; the API also puts them at the top level for the seed's clients)."""
    return {
        "source_KME_ID": config.kme_id, "target_KME_ID": target_kme,
        "master_SAE_ID": master, "slave_SAE_ID": pool.sae_id,
        "key_size": pool.key_size_bits, "stored_key_count": pool.available_keys,
        "max_key_count": pool.pool_size_limit,
        "max_key_per_request": config.max_keys_per_request,
        "max_key_size": config.max_key_size_bits, "min_key_size": config.min_key_size_bits,
        "max_SAE_ID_count": 0,
        "status_extension": pool_view(pool, next_sync_s),
    }


def pool_view(pool: PoolStatus, next_sync_s: float | None) -> dict[str, Any]:
    return {
        "sae_id": pool.sae_id, "user_email": pool.user_email,
        "total_keys": pool.total_keys, "used_keys": pool.used_keys,
        "available_keys": pool.available_keys, "available_bits": pool.available_bits,
        "usage_percent": round(100.0 * pool.used_keys / max(pool.total_keys, 1), 2),
        "pool_size_limit": pool.pool_size_limit, "low_threshold": pool.low_threshold,
        "is_low": pool.available_keys < pool.low_threshold,
        "last_sync": pool.last_sync_time, "next_sync": next_sync_s,
        "key_size_bytes": pool.key_size_bits // 8, "key_size_bits": pool.key_size_bits,
        "kind": "slice" if pool.is_slice else "home", "home_lkm": pool.home_lkm,
    }


def pools_view(pools: list[PoolStatus], next_sync_s: float | None) -> dict[str, Any]:
    views = [pool_view(pool, next_sync_s) for pool in pools]
    return {"pools": views, "summary": {
        "total_users": sum(1 for p in pools if not p.is_slice),
        "total_keys": sum(p.total_keys for p in pools),
        "total_available": sum(p.available_keys for p in pools),
        "low_pool_count": sum(1 for v in views if v["is_low"])}}


def sync_view(reason: str, timestamp_s: float, results: list[dict[str, Any]]) -> dict[str, Any]:
    """The seed's manual-sync reply from the per-pool results of one sync."""
    failed = [r for r in results if r["outcome"] != "ok"]
    return {"success": not failed, "reason": reason, "timestamp": timestamp_s,
            "users_synced": [r["sae_id"] for r in results if r["outcome"] == "ok"],
            "keys_received": sum(r["keys_received"] for r in results),
            "errors": [{"sae_id": r["sae_id"], "error": r["outcome"]} for r in failed]}
