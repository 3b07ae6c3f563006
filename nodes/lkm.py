"""The local key manager (LKM) actor: per-user key pools, ETSI 014 semantics, hybrid sync.

Every HTTP request reaches the LKM as a message (``nodes.messages``); the LKM checks identities
and bounds, asks its :class:`~nodes.keystore.KeyStore`, and replies with keys or a JSON-ready view.
It never reads the time except through its injected clock.

Sync policy (the seed's hybrid strategy, per pool): a *scheduled* sync every ``interval_s``; after a
delivery, a *threshold* sync when the receiver's pool falls below ``threshold`` of its limit and an
*emergency* sync below ``emergency``; a *manual* sync on request. A sync tops each chosen pool up
to its limit from the :class:`~nodes.supply.KeySupply`. An unreachable key manager is an outcome:
the LKM records it, keeps serving what it holds, and tries again no sooner than ``RETRY_S`` later.
"""

from __future__ import annotations

import math
from typing import Any, Awaitable, Callable, Protocol

from nodes.config import NodeConfig
from nodes.errors import (BadRequest, ExtensionMandatoryUnmet, ExtensionMandatoryUnsupported,
                          KMUnreachable, NotFound, QKDError, SizeNotMultipleOf8, Unauthorized)
from nodes.keystore import Key, KeyStore, PoolStatus
from nodes.messages import (Audit, DeleteUser, GetKeys, GetKeysWithIds, GetKmStatus, GetStatus, KeyState,
                            ListPools, Refill, Register, Sync)
from nodes.supply import KeySupply
from simulator.actor import Actor
from simulator.clock import Clock, Timer
from simulator.metrics import pool_node

RESERVED_IDS = frozenset({"register", "pools", "km", "mark_consumed", "sync"})
SUPPORTED_EXTENSIONS = frozenset({"target_user_id"})
MAX_SAE_ID_LENGTH = 128
RETRY_S = 300.0
SYNC_REASONS = ("scheduled", "threshold", "emergency", "manual")


class Observer(Protocol):
    def __call__(self, kind: str, node: str, **data: Any) -> None: ...


def _ignore(kind: str, node: str, **data: Any) -> None:
    """The default observer: records nothing."""


class LocalKeyManager(Actor):
    expected_errors = (QKDError,)

    def __init__(self, config: NodeConfig, clock: Clock, supply: KeySupply,
                 observe: Observer = _ignore, name: str | None = None) -> None:
        super().__init__(name or config.local_km_id)
        self.config = config
        self.clock = clock
        self.supply = supply
        self.observe = observe
        self.store: KeyStore | None = None
        self._timer: Timer | None = None
        self._next_sync_s: float | None = None
        self._pending: set[str] = set()
        self._retry_after: dict[str, float] = {}
        self.km_available = True
        self._handlers: dict[type, Callable[[Any], Awaitable[Any]]] = {
            Register: self._register, GetStatus: self._status, GetKeys: self._enc_keys,
            GetKeysWithIds: self._dec_keys, Refill: self._refill, DeleteUser: self._delete,
            ListPools: self._pools, GetKmStatus: self._km_status, Sync: self._sync,
            KeyState: self._key_state, Audit: self._audit,
        }

    # -- lifecycle -----------------------------------------------------------------------

    async def on_start(self) -> None:
        self.store = await KeyStore.open(self.config.db_path)
        self._schedule_sync()

    async def on_stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.store is not None:
            await self.store.close()
            self.store = None

    def _schedule_sync(self) -> None:
        interval_s = self.config.sync.interval_s
        self._next_sync_s = self.clock.now() + interval_s
        self._timer = self.clock.call_later(interval_s, self._on_sync_timer)

    def _on_sync_timer(self) -> None:
        self.ref.tell(Sync("scheduled"))
        self._schedule_sync()

    async def receive(self, message: object) -> Any:
        return await self._handlers[type(message)](message)

    @property
    def _store(self) -> KeyStore:
        assert self.store is not None, "LKM used before on_start"
        return self.store

    # -- users ---------------------------------------------------------------------------

    async def _register(self, msg: Register) -> dict[str, Any]:
        check_sae_id(msg.sae_id)
        cfg = self.config
        size = msg.initial_pool_size or cfg.default_pool_size
        limit = min(max(size, cfg.min_pool_size), cfg.max_pool_size)
        materials = await self._fetch(msg.sae_id, limit)
        now = self.clock.now()
        display = msg.display_name or (msg.user_email or msg.sae_id).split("@")[0]
        await self._store.register(msg.sae_id, msg.user_email, display, limit,
                                   math.ceil(limit * cfg.sync.threshold), cfg.key_size_bits,
                                   materials, now)
        return {"success": True, "sae_id": msg.sae_id, "user_email": msg.user_email,
                "pool_size": limit, "keys_generated": len(materials), "registered_at": now}

    async def _delete(self, msg: DeleteUser) -> dict[str, Any]:
        deleted = await self._store.delete_user(msg.sae_id)
        return {"success": True, "sae_id": msg.sae_id, "keys_deleted": deleted}

    async def _refill(self, msg: Refill) -> dict[str, Any]:
        pool = await self._pool(msg.sae_id)
        room = max(pool.pool_size_limit - pool.available_keys, 0)
        wanted = room if msg.keys_to_add is None else min(max(msg.keys_to_add, 0), room)
        added = await self._store.add_keys(msg.sae_id, await self._fetch(msg.sae_id, wanted),
                                           self.clock.now()) if wanted else 0
        result = {"success": True, "sae_id": msg.sae_id, "keys_added": added,
                  "available_before": pool.available_keys,
                  "available_after": pool.available_keys + added}
        if not added:
            result["message"] = "pool is full" if not room else "nothing to add"
        return result

    async def _pool(self, sae_id: str) -> PoolStatus:
        pool = await self._store.pool_status(sae_id)
        if pool is None:
            raise NotFound(f"SAE '{sae_id}' is not registered at this KME", sae_id=sae_id)
        return pool

    async def _caller(self, caller: str) -> None:
        if not await self._store.exists(caller):
            raise Unauthorized(f"SAE '{caller}' is not registered at this KME")

    # -- ETSI 014 --------------------------------------------------------------------------

    async def _status(self, msg: GetStatus) -> dict[str, Any]:
        # the slave first: a deleted user asking for its own status gets 404 (replay spec step 25)
        pool = await self._pool(msg.slave)
        await self._caller(msg.caller)
        return self.status_view(pool, msg.caller)

    def status_view(self, pool: PoolStatus, master: str) -> dict[str, Any]:
        """The 11 ETSI Status fields, then the seed's pool fields."""
        cfg = self.config
        return {
            "source_KME_ID": cfg.kme_id, "target_KME_ID": cfg.kme_id,
            "master_SAE_ID": master, "slave_SAE_ID": pool.sae_id,
            "key_size": pool.key_size_bits, "stored_key_count": pool.available_keys,
            "max_key_count": pool.pool_size_limit,
            "max_key_per_request": cfg.max_keys_per_request,
            "max_key_size": cfg.max_key_size_bits, "min_key_size": cfg.min_key_size_bits,
            "max_SAE_ID_count": 0,
            **self.pool_view(pool),
        }

    def pool_view(self, pool: PoolStatus) -> dict[str, Any]:
        limit = pool.pool_size_limit
        return {
            "sae_id": pool.sae_id, "user_email": pool.user_email,
            "total_keys": pool.total_keys, "used_keys": pool.used_keys,
            "available_keys": pool.available_keys, "available_bits": pool.available_bits,
            "usage_percent": round(100.0 * pool.used_keys / max(pool.total_keys, 1), 2),
            "pool_size_limit": limit, "low_threshold": pool.low_threshold,
            "is_low": pool.available_keys < pool.low_threshold,
            "last_sync": pool.last_sync_time, "next_sync": self._next_sync_s,
            "key_size_bytes": pool.key_size_bits // 8, "key_size_bits": pool.key_size_bits,
        }

    async def _enc_keys(self, msg: GetKeys) -> list[Key]:
        await self._caller(msg.caller)  # authenticate first: outsiders learn nothing (401)
        size_bits = self._check_key_request(msg)
        await self._pool(msg.slave)
        if msg.slave == msg.caller:
            raise BadRequest("slave_SAE_ID must differ from the caller's SAE ID")
        keys = await self._store.reserve(msg.slave, msg.caller, msg.slave, msg.number,
                                         size_bits, self.clock.now())
        self.observe("delivery", self.name, pool=pool_node(self.name, msg.slave),
                     master=msg.caller, slave=msg.slave, keys=len(keys))
        await self._check_level(msg.slave)
        return keys

    def _check_key_request(self, msg: GetKeys) -> int:
        cfg = self.config
        size = cfg.key_size_bits if msg.size_bits is None else msg.size_bits
        if not 1 <= msg.number <= cfg.max_keys_per_request:
            raise BadRequest(f"number must be between 1 and {cfg.max_keys_per_request}",
                             number=msg.number)
        if size % 8:
            raise SizeNotMultipleOf8(size=size)
        if not cfg.min_key_size_bits <= size <= cfg.max_key_size_bits:
            raise BadRequest(f"size must be between {cfg.min_key_size_bits} and "
                             f"{cfg.max_key_size_bits} bits", size=size)
        if msg.additional_slaves:
            raise BadRequest("additional_slave_SAE_IDs is not supported (max_SAE_ID_count is 0)")
        self._check_extensions(msg)
        return size

    def _check_extensions(self, msg: GetKeys) -> None:
        unsupported = [name for name, _ in msg.extension_mandatory
                       if name not in SUPPORTED_EXTENSIONS]
        if unsupported:
            raise ExtensionMandatoryUnsupported(**{
                "extension_mandatory_unsupported": f"{', '.join(unsupported)} is not supported"})
        for name, value in msg.extension_mandatory:
            if name == "target_user_id" and value != msg.slave:
                raise ExtensionMandatoryUnmet(target_user_id="must equal the slave SAE ID")

    async def _dec_keys(self, msg: GetKeysWithIds) -> list[Key]:
        await self._caller(msg.caller)  # authenticate first: outsiders learn nothing (401)
        if len(msg.key_ids) > self.config.max_keys_per_request:
            raise BadRequest(f"at most {self.config.max_keys_per_request} key IDs per request")
        keys = await self._store.take_for_slave(msg.caller, msg.master, msg.key_ids,
                                                self.clock.now())
        self.observe("consumed", self.name, slave=msg.caller, master=msg.master, keys=len(keys))
        return keys

    async def _key_state(self, msg: KeyState) -> dict[str, Any]:
        state = await self._store.key_status(msg.key_id)
        if state is None:
            raise NotFound("key not found", key_ID=msg.key_id)
        status, _, _ = state
        names = {0: "available", 1: "delivered", 2: "consumed"}
        return {"success": True, "key_ID": msg.key_id, "state": names[status],
                "consumed": status == 2}

    async def _audit(self, msg: Audit) -> dict[str, int]:
        return await self._store.audit()

    # -- pools and sync ------------------------------------------------------------------------

    async def _pools(self, msg: ListPools | None = None) -> dict[str, Any]:
        pools = await self._store.all_pools()
        views = [self.pool_view(pool) for pool in pools]
        return {"pools": views, "summary": {
            "total_users": len(pools),
            "total_keys": sum(p.total_keys for p in pools),
            "total_available": sum(p.available_keys for p in pools),
            "low_pool_count": sum(1 for v in views if v["is_low"])}}

    async def _km_status(self, msg: GetKmStatus) -> dict[str, Any]:
        stats = await self._store.sync_stats()
        return {"local_km_id": self.config.local_km_id,
                "next_door_km_url": self.config.next_door_km_url,
                "next_door_km_available": self.km_available,
                "last_sync": await self._store.last_sync_time(), "next_sync": self._next_sync_s,
                "sync_stats": {"total": stats.total, "successful": stats.successful,
                               "failed": stats.failed, "keys_received": stats.keys_received},
                "pools": await self._pools()}

    async def _check_level(self, sae_id: str) -> None:
        pool = await self._store.pool_status(sae_id)
        if pool is None or sae_id in self._pending:
            return
        if self._retry_after.get(sae_id, -math.inf) > self.clock.now():
            return
        level = pool.available_keys / max(pool.pool_size_limit, 1)
        reason = ("emergency" if level < self.config.sync.emergency else
                  "threshold" if level < self.config.sync.threshold else None)
        if reason is not None:
            self._pending.add(sae_id)
            self.ref.tell(Sync(reason, (sae_id,)))

    async def _sync(self, msg: Sync) -> dict[str, Any]:
        if msg.reason not in SYNC_REASONS:
            raise BadRequest(f"unknown sync reason {msg.reason!r}")
        targets = await self._sync_targets(msg)
        result: dict[str, Any] = {"success": True, "reason": msg.reason,
                                  "timestamp": self.clock.now(), "users_synced": [],
                                  "keys_received": 0, "errors": []}
        for pool in targets:
            received = await self._sync_pool(msg.reason, pool)
            if received is None:
                result["success"] = False
                result["errors"].append({"sae_id": pool.sae_id, "error": "KM unreachable"})
            else:
                result["users_synced"].append(pool.sae_id)
                result["keys_received"] += received
        return result

    async def _sync_targets(self, msg: Sync) -> list[PoolStatus]:
        self._pending.difference_update(msg.users)
        if msg.users:
            return [await self._pool(sae_id) for sae_id in msg.users]
        return [p for p in await self._store.all_pools() if p.available_keys < p.pool_size_limit]

    async def _sync_pool(self, reason: str, pool: PoolStatus) -> int | None:
        asked = max(pool.pool_size_limit - pool.available_keys, 0)
        start_s = self.clock.now()
        try:
            materials = await self.supply.fetch(self.name, pool.sae_id, asked,
                                                pool.key_size_bits // 8)
        except KMUnreachable:
            self.km_available = False
            self._retry_after[pool.sae_id] = self.clock.now() + RETRY_S
            await self._log_sync(reason, pool.sae_id, asked, 0, start_s, "unreachable")
            return None
        self.km_available = True
        self._retry_after.pop(pool.sae_id, None)
        added = await self._store.add_keys(pool.sae_id, materials, self.clock.now())
        await self._log_sync(reason, pool.sae_id, asked, added, start_s, "ok")
        return added

    async def _log_sync(self, reason: str, sae_id: str, asked: int, received: int,
                        start_s: float, outcome: str) -> None:
        duration_s = self.clock.now() - start_s
        await self._store.record_sync(start_s, reason, sae_id, asked, received, duration_s,
                                      outcome)
        self.observe("sync", self.name, pool=pool_node(self.name, sae_id), reason=reason,
                     outcome=outcome, keys_requested=asked, keys_received=received,
                     duration_s=duration_s)

    async def _fetch(self, sae_id: str, count: int) -> list[bytes]:
        if count <= 0:
            return []
        try:
            return await self.supply.fetch(self.name, sae_id, count, self.config.key_bytes)
        except KMUnreachable:
            self.km_available = False
            return []


def check_sae_id(sae_id: str) -> None:
    """SAE IDs are data: any printable text, but not a reserved route word."""
    if not sae_id or len(sae_id) > MAX_SAE_ID_LENGTH:
        raise BadRequest(f"sae_id must be 1 to {MAX_SAE_ID_LENGTH} characters")
    if sae_id in RESERVED_IDS:
        raise BadRequest(f"'{sae_id}' is a reserved word, not an SAE ID")
    if not sae_id.isprintable() or sae_id != sae_id.strip():
        raise BadRequest("sae_id must be printable and not start or end with spaces")
