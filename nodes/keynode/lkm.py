"""The local key manager (LKM) actor: per-user key pools, remote slices, ETSI 014, hybrid sync.

Every HTTP request reaches the LKM as a message (``nodes.keynode.messages``); the LKM checks identities
and bounds, asks its :class:`~nodes.keynode.keystore.KeyStore`, and replies with keys or a JSON-ready view.
It never reads the time except through its injected clock.

Pools: the *home pool* of each SAE homed here, and a *slice* of the home pool of each remote SAE
that local senders write to (keys reserved at the receiver's home LKM and relayed here ahead of
time, so a cross-site send is served locally even while the network is down).

Sync policy (the seed's hybrid strategy, per pool or slice): *scheduled* every ``interval_s``;
after a delivery, *threshold* when the pool falls below ``threshold`` of its limit and
*emergency* below ``emergency``; *manual* on request. A sync tops the pool up to its limit from
the :class:`~nodes.keynode.supply.KeySupply`. The fetch runs in a background task and its result comes
back as a :class:`~nodes.keynode.messages.SyncResult` message, so the LKM keeps answering (and can ship
keys to other LKMs) while it waits. An unreachable key manager is an outcome: the LKM records
it, keeps serving what it holds, and retries that pool no sooner than ``RETRY_S`` later.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from typing import Any, Awaitable, Callable, Protocol, Sequence

from nodes.keynode.config import NodeConfig
from nodes.keynode.directory import Directory
from nodes.keynode.errors import (BadRequest, ExtensionMandatoryUnmet, ExtensionMandatoryUnsupported,
                          InsufficientKeys, KMUnreachable, NotFound, QKDError,
                          SizeNotMultipleOf8, Unauthorized)
from nodes.keynode.keystore import Key, KeyStore, PoolStatus, Txn
from nodes.keynode.messages import (AddRemote, Audit, DeleteUser, GetKeys, GetKeysWithIds, GetKmStatus,
                            GetStatus, KeyState, ListPools, Refill, Register, ShipSlice, Sync,
                            SyncResult, UnshipSlice)
from nodes.keynode.supply import KeySupply
from nodes.keynode.views import pools_view, status_view, sync_view
from simulator import Actor
from simulator import Clock, Timer
from nodes.keynode.views import pool_node

RESERVED_IDS = frozenset({"register", "pools", "km", "mark_consumed", "sync"})
SUPPORTED_EXTENSIONS = frozenset({"target_user_id"})
MAX_SAE_ID_LENGTH = 128
RETRY_S = 300.0
SYNC_REASONS = ("scheduled", "threshold", "emergency", "manual")
KEY_REQUESTS = frozenset({GetStatus, GetKeys, GetKeysWithIds})

#: an ETSI request planned before the store hop: its transaction, and what to do with the
#: transaction's outcome (its result, or the QKDError that refused it) to get the reply
Plan = tuple[Txn[Any], Callable[[Any], Awaitable[Any]]]


class Observer(Protocol):
    def __call__(self, kind: str, node: str, **data: Any) -> None: ...


def _ignore(kind: str, node: str, **data: Any) -> None:
    """The default observer: records nothing."""


class LocalKeyManager(Actor):
    """An LKM. A served one (its store on aiosqlite's thread) answers the ETSI requests queued
    in its mailbox together, one store transaction for all (:meth:`receive_batch`); under the
    simulator's virtual clock (the store inline) it takes them one by one."""

    expected_errors = (QKDError,)

    def __init__(self, config: NodeConfig, clock: Clock, supply: KeySupply,
                 observe: Observer = _ignore, directory: Directory | None = None) -> None:
        super().__init__(config.local_km_id)
        self.config = config
        self.clock = clock
        self.supply = supply
        self.observe = observe
        self.directory = directory or Directory()
        self.store: KeyStore | None = None
        self._timer: Timer | None = None
        self._next_sync_s: float | None = None
        self._in_flight: set[str] = set()
        self._sync_queue: deque[tuple[str, PoolStatus, int, asyncio.Future[Any]]] = deque()
        self._worker_scheduled = False
        self._local_users: set[str] | None = None
        self._retry_after: dict[str, float] = {}
        self.km_available = True
        self.batchable = frozenset() if config.inline_store else KEY_REQUESTS
        self._planners: dict[type, Callable[[Any], Plan]] = {
            GetStatus: self._plan_status, GetKeys: self._plan_enc_keys,
            GetKeysWithIds: self._plan_dec_keys}
        self._handlers: dict[type, Callable[[Any], Awaitable[Any]]] = {
            Register: self._register, Refill: self._refill, DeleteUser: self._delete,
            ListPools: self._pools, GetKmStatus: self._km_status, Sync: self._sync,
            KeyState: self._key_state, Audit: self._audit, AddRemote: self._add_remote,
            ShipSlice: self._ship, UnshipSlice: self._unship, SyncResult: self._sync_result,
        }

    # -- lifecycle -----------------------------------------------------------------------

    async def on_start(self) -> None:
        self._local_users = None  # read again from the store (after a restart too)
        self.store = await KeyStore.open(self.config.db_path, inline=self.config.inline_store)
        self._schedule_sync()

    async def on_stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for _, _, _, done in self._sync_queue:
            done.cancel()
        self._sync_queue.clear()
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
        if type(message) in KEY_REQUESTS:
            [outcome] = await self.receive_batch([message])
            if isinstance(outcome, Exception):
                raise outcome
            return outcome
        return await self._handlers[type(message)](message)

    async def receive_batch(self, messages: Sequence[object]) -> list[Any]:
        """Answer ETSI requests (:data:`KEY_REQUESTS`) with one store hop: each request's own
        checks, then one transaction with a savepoint per request, then each request's reply,
        all in mailbox order. The outcome of a request is its reply or the error refusing it;
        a refused request hands out no key and does not disturb the others."""
        if self._local_users is None:  # the actor is the store's only writer: cache who is home
            self._local_users = await self._store.local_users()
        plans: list[Plan | Exception] = []
        for message in messages:
            try:
                plans.append(self._planners[type(message)](message))
            except Exception as error:  # noqa: BLE001 - the request's answer, in its place
                plans.append(error)
        txns = [plan[0] for plan in plans if not isinstance(plan, Exception)]
        results = iter(await self._store.many(txns) if txns else ())
        outcomes: list[Any] = []
        for plan in plans:
            try:
                if isinstance(plan, Exception):
                    raise plan
                outcomes.append(await plan[1](next(results)))
            except Exception as error:  # noqa: BLE001 - the request's answer, in its place
                outcomes.append(error)
        return outcomes

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
        materials = await self._fetch(msg.sae_id, limit, provision=True)
        now = self.clock.now()
        display = msg.display_name or (msg.user_email or msg.sae_id).split("@")[0]
        await self._store.register(msg.sae_id, msg.user_email, display, limit,
                                   math.ceil(limit * cfg.sync.threshold), cfg.key_size_bits,
                                   materials, now)
        if self._local_users is not None:
            self._local_users.add(msg.sae_id)
        return {"success": True, "sae_id": msg.sae_id, "user_email": msg.user_email,
                "pool_size": limit, "keys_generated": len(materials), "registered_at": now}

    async def _add_remote(self, msg: AddRemote) -> None:
        threshold = math.ceil(msg.slice_size * self.config.sync.threshold)
        await self._store.add_remote(msg.sae_id, msg.user_email, msg.home_lkm, msg.slice_size,
                                     threshold, self.config.key_size_bits, self.clock.now())

    async def _delete(self, msg: DeleteUser) -> dict[str, Any]:
        deleted = await self._store.delete_user(msg.sae_id)
        if self._local_users is not None:
            self._local_users.discard(msg.sae_id)
        return {"success": True, "sae_id": msg.sae_id, "keys_deleted": deleted}

    async def _refill(self, msg: Refill) -> dict[str, Any]:
        pool = await self._pool(msg.sae_id)
        if pool.is_slice:
            raise BadRequest("a slice of a remote pool is refilled by sync, not refill")
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

    async def _pool_or_new_slice(self, sae_id: str) -> PoolStatus:
        """The pool serving ``sae_id``; a first request for a known remote SAE opens a slice."""
        home = self.directory.home_of(sae_id)
        if home is not None and home != self.name and \
                await self._store.pool_status(sae_id) is None:
            await self._add_remote(AddRemote(sae_id, home, self._slice_size()))
            self._start_sync("emergency", await self._pool(sae_id))
        return await self._pool(sae_id)

    def _slice_size(self) -> int:
        return max(self.config.min_pool_size, self.config.default_pool_size // 4)

    def _is_remote(self, sae_id: str) -> bool:
        home = self.directory.home_of(sae_id)
        return home is not None and home != self.name

    def _unknown_caller(self, caller: str) -> Unauthorized | None:
        """401 unless ``caller`` is at home here (the cache is loaded by :meth:`receive_batch`)."""
        assert self._local_users is not None
        if caller in self._local_users:
            return None
        return Unauthorized(f"SAE '{caller}' is not registered at this KME")

    # -- ETSI 014 --------------------------------------------------------------------------

    def _plan_status(self, msg: GetStatus) -> Plan:
        unknown_caller = self._unknown_caller(msg.caller)

        async def reply(pool: PoolStatus | None | QKDError) -> dict[str, Any]:
            if isinstance(pool, QKDError):
                raise pool
            # the slave first: a deleted user asking for its own status gets 404 (replay spec 25)
            if pool is None:
                raise NotFound(f"SAE '{msg.slave}' is not registered at this KME",
                               sae_id=msg.slave)
            if unknown_caller is not None:
                raise unknown_caller
            target = pool.home_lkm or self.config.kme_id
            return status_view(self.config, pool, msg.caller, target, self._next_sync_s)
        return self._store.pool_read(msg.slave), reply

    def _plan_enc_keys(self, msg: GetKeys) -> Plan:
        unknown_caller = self._unknown_caller(msg.caller)
        if unknown_caller is not None:  # authenticate first: outsiders learn nothing (401)
            raise unknown_caller
        size_bits = self._check_key_request(msg)
        # the store refuses in the ETSI order: no pool (404), the caller as slave (400), 503
        def reservation() -> Txn[tuple[list[Key], PoolStatus]]:
            return self._store.reservation(msg.slave, msg.caller, msg.slave, msg.number,
                                           size_bits, self.clock.now())

        async def reply(outcome: tuple[list[Key], PoolStatus] | QKDError) -> list[Key]:
            if isinstance(outcome, NotFound) and self._is_remote(msg.slave):
                await self._pool_or_new_slice(msg.slave)  # a first request opens the slice
                [outcome] = await self._store.many([reservation()])
            if isinstance(outcome, InsufficientKeys):  # what a drained pool looks like
                await self._check_level(msg.slave)
            if isinstance(outcome, QKDError):
                raise outcome
            keys, after = outcome
            self.observe("delivery", self.name, pool=pool_node(self.name, msg.slave),
                         master=msg.caller, slave=msg.slave, keys=len(keys))
            self._check_pool_level(after)
            return keys
        return reservation(), reply

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

    def _plan_dec_keys(self, msg: GetKeysWithIds) -> Plan:
        unknown_caller = self._unknown_caller(msg.caller)
        if unknown_caller is not None:  # authenticate first: outsiders learn nothing (401)
            raise unknown_caller
        if len(msg.key_ids) > self.config.max_keys_per_request:
            raise BadRequest(f"at most {self.config.max_keys_per_request} key IDs per request")

        async def reply(keys: list[Key] | QKDError) -> list[Key]:
            if isinstance(keys, QKDError):
                raise keys
            self.observe("consumed", self.name, slave=msg.caller, master=msg.master,
                         keys=len(keys))
            return keys
        return self._store.slave_read(msg.caller, msg.master, msg.key_ids, self.clock.now(),
                                      self.directory.home_of(msg.master)), reply

    async def _key_state(self, msg: KeyState) -> dict[str, Any]:
        state = await self._store.key_status(msg.key_id)
        if state is None:
            raise NotFound("key not found", key_ID=msg.key_id)
        status, _, _ = state
        names = {0: "available", 1: "delivered", 2: "consumed", 3: "shipped"}
        return {"success": True, "key_ID": msg.key_id, "state": names[status],
                "consumed": status == 2}

    async def _audit(self, msg: Audit) -> dict[str, int]:
        return await self._store.audit()

    async def _ship(self, msg: ShipSlice) -> list[Key]:
        keys = await self._store.ship(msg.owner, msg.to_lkm, msg.count, self.clock.now())
        if keys:
            self.observe("ship", self.name, pool=pool_node(self.name, msg.owner),
                         to=msg.to_lkm, keys=len(keys))
            await self._check_level(msg.owner)
        return keys

    async def _unship(self, msg: UnshipSlice) -> int:
        return await self._store.unship(msg.owner, msg.key_ids)

    # -- pools and sync ------------------------------------------------------------------------

    async def _pools(self, msg: ListPools | None = None) -> dict[str, Any]:
        return pools_view(await self._store.all_pools(), self._next_sync_s)

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
        if pool is not None:
            self._check_pool_level(pool)

    def _check_pool_level(self, pool: PoolStatus) -> None:
        """Queue a threshold or emergency sync if the pool is below either level."""
        if pool.sae_id in self._in_flight:
            return
        if self._retry_after.get(pool.sae_id, -math.inf) > self.clock.now():
            return
        level = pool.available_keys / max(pool.pool_size_limit, 1)
        reason = ("emergency" if level < self.config.sync.emergency else
                  "threshold" if level < self.config.sync.threshold else None)
        if reason is not None:
            self._start_sync(reason, pool)

    async def _sync(self, msg: Sync) -> list[asyncio.Future[dict[str, Any]]]:
        """Queue one fetch per chosen pool; the reply is their futures (await them for results)."""
        if msg.reason not in SYNC_REASONS:
            raise BadRequest(f"unknown sync reason {msg.reason!r}")
        if msg.users:
            targets = [await self._pool(sae_id) for sae_id in msg.users]
        else:
            targets = [p for p in await self._store.all_pools()
                       if p.available_keys < p.pool_size_limit]
        tasks = [self._start_sync(msg.reason, pool) for pool in targets]
        return [task for task in tasks if task is not None]

    def _start_sync(self, reason: str, pool: PoolStatus) -> asyncio.Future[dict[str, Any]] | None:
        """Queue a pool's sync; the queue is drained by one worker, started in a clock step of
        its own, so syncs never interleave with each other or with the request that triggered
        them (which is what keeps virtual-time runs repeatable)."""
        asked = pool.pool_size_limit - pool.available_keys
        if asked <= 0 or pool.sae_id in self._in_flight:
            return None
        self._in_flight.add(pool.sae_id)
        done: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._sync_queue.append((reason, pool, asked, done))
        if not self._worker_scheduled:
            self._worker_scheduled = True
            self.clock.call_later(0.0, self._launch_sync_worker)
        return done

    def _launch_sync_worker(self) -> None:
        if self.store is not None:  # not stopped (crashed) meanwhile
            self.start_task(self._drain_sync_queue())

    async def _drain_sync_queue(self) -> None:
        try:
            while self._sync_queue:
                reason, pool, asked, done = self._sync_queue.popleft()
                result = await self._fetch_for_sync(reason, pool, asked)
                if not done.done():
                    done.set_result(result)
        finally:
            self._worker_scheduled = False

    async def _fetch_for_sync(self, reason: str, pool: PoolStatus,
                              asked: int) -> dict[str, Any]:
        """Runs outside the mailbox: fetch, then hand the result back as a message."""
        start_s = self.clock.now()
        materials: tuple[bytes, ...] = ()
        keys: tuple[Key, ...] = ()
        try:
            if pool.home_lkm is not None:
                keys = tuple(await self.supply.fetch_slice(self.name, pool.sae_id,
                                                           pool.home_lkm, asked))
            else:
                materials = tuple(await self.supply.fetch(self.name, pool.sae_id, asked,
                                                          pool.key_size_bits // 8))
            outcome = "ok"
        except KMUnreachable:
            outcome = "unreachable"
        result: dict[str, Any] = await self.ref.ask(
            SyncResult(reason, pool.sae_id, asked, start_s, outcome, materials, keys))
        return result

    async def _sync_result(self, msg: SyncResult) -> dict[str, Any]:
        self._in_flight.discard(msg.sae_id)
        now = self.clock.now()
        if msg.outcome == "ok":
            self.km_available = True
            self._retry_after.pop(msg.sae_id, None)
            if msg.keys:
                received = await self._store.store_slice(msg.sae_id, msg.keys, now)  # type: ignore[arg-type]
            else:
                received = await self._store.add_keys(msg.sae_id, msg.materials, now)
        else:
            self.km_available = False
            self._retry_after[msg.sae_id] = now + RETRY_S
            received = 0
        duration_s = now - msg.start_s
        await self._store.record_sync(msg.start_s, msg.reason, msg.sae_id, msg.asked, received,
                                      duration_s, msg.outcome)
        self.observe("sync", self.name, pool=pool_node(self.name, msg.sae_id), reason=msg.reason,
                     outcome=msg.outcome, keys_requested=msg.asked, keys_received=received,
                     duration_s=duration_s)
        return {"sae_id": msg.sae_id, "outcome": msg.outcome, "keys_received": received}

    async def _fetch(self, sae_id: str, count: int, provision: bool = False) -> list[bytes]:
        if count <= 0:
            return []
        try:
            return await self.supply.fetch(self.name, sae_id, count, self.config.key_bytes,
                                           provision)
        except KMUnreachable:
            self.km_available = False
            return []


async def sync_and_wait(lkm: Any, message: Sync, timestamp_s: float) -> dict[str, Any]:
    """Run a sync to the end and summarise it (for the manual-sync route and the builder)."""
    tasks = await lkm.ask(message)
    results = list(await asyncio.gather(*tasks)) if tasks else []
    return sync_view(message.reason, timestamp_s, results)


def check_sae_id(sae_id: str) -> None:
    """SAE IDs are data: any printable text, but not a reserved route word."""
    if not sae_id or len(sae_id) > MAX_SAE_ID_LENGTH:
        raise BadRequest(f"sae_id must be 1 to {MAX_SAE_ID_LENGTH} characters")
    if sae_id in RESERVED_IDS:
        raise BadRequest(f"'{sae_id}' is a reserved word, not an SAE ID")
    if not sae_id.isprintable() or sae_id != sae_id.strip():
        raise BadRequest("sae_id must be printable and not start or end with spaces")
