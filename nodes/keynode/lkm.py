"""The local key manager (LKM) actor: per-user key pools, remote slices, ETSI 014, hybrid sync.

Every HTTP request reaches the LKM as a message (:mod:`nodes.keynode.messages`); the three ETSI
key requests are answered by :mod:`nodes.keynode.requests` (one store transaction for all those
queued together), the seed's routes here. Time comes only from the injected clock.

Pools: the *home pool* of each SAE homed here, and a *slice* of the home pool of each remote SAE
that local senders write to (keys reserved at the receiver's home LKM, above its own threshold,
and relayed here ahead of time, so a cross-site send is served locally while the network is down).

Sync: :class:`~nodes.keynode.sync.SyncScheduler` decides (pure); one
:class:`~nodes.keynode.worker.SyncWorker` task carries its orders out, started in a clock step of
its own (a waiting manual sync starts it at once), and hands each result back as a
:class:`~nodes.keynode.messages.SyncDone` message whose reply is its next order: an LKM never
awaits another actor in its mailbox. A failed fetch is an outcome (``unreachable``, ``no_key``,
``error``), never a pool stuck in flight, and retries on a backoff (:mod:`nodes.keynode.retry`).
"""
from __future__ import annotations

import asyncio
import math
from typing import Any, Awaitable, Callable, Sequence

from nodes.keynode import copies
from nodes.keynode.config import NodeConfig
from nodes.keynode.directory import Directory
from nodes.keynode.errors import BadRequest, KMUnreachable, NotFound, QKDError
from nodes.keynode.messages import (
    AddRemote,
    Audit,
    ConsumeCopies,
    DeleteUser,
    GetKmStatus,
    LaunchSync,
    ListPools,
    MarkConsumed,
    Observer,
    Refill,
    Register,
    RetrySync,
    ShipSlice,
    Sync,
    SyncDone,
    UnshipSlice,
    ignore,
)
from nodes.keynode.naming import check_sae_id, pool_node
from nodes.keynode.quota import SenderBuckets
from nodes.keynode.requests import KEY_REQUESTS, Plan, plan
from nodes.keynode.retry import RetryTimers
from nodes.keynode.store import KeyStore, PoolStatus, audit, pools, shipping, synclog
from nodes.keynode.supply import KeySupply
from nodes.keynode.sync import (
    FAILED_OUTCOMES,
    SYNC_REASONS,
    PoolLevel,
    SyncOrder,
    SyncOutcome,
    SyncScheduler,
)
from nodes.keynode.views import pools_view
from nodes.keynode.worker import SyncNext, SyncWait, SyncWorker
from simulator import Actor, Clock, Timer


class LocalKeyManager(Actor):
    """An LKM. A served one (its store on aiosqlite's thread) answers the ETSI requests queued
    in its mailbox together, one store transaction for all (:meth:`receive_batch`); under the
    simulator's virtual clock (the store inline) it takes them one by one."""

    expected_errors = (QKDError,)

    def __init__(self, config: NodeConfig, clock: Clock, supply: KeySupply,
                 observe: Observer = ignore, directory: Directory | None = None) -> None:
        super().__init__(config.local_km_id)
        self.config = config
        self.clock = clock
        self.supply = supply
        self.observe = observe
        self.directory = directory or Directory()
        self.batchable = frozenset() if config.inline_store else KEY_REQUESTS
        self.quota = SenderBuckets(config.sender_quota) if config.sender_quota else None
        self._store: KeyStore | None = None
        self._local: set[str] | None = None  # who is at home here (this actor is the only writer)
        self.sync = SyncScheduler(config.sync)
        self._timer: Timer | None = None
        self._launch: Timer | None = None  # the worker's start, due in a clock step of its own
        self._worker: asyncio.Task[None] | None = None
        self._waits: list[SyncWait] = []
        self._handlers: dict[type, Callable[[Any], Awaitable[Any]]] = {
            Register: self._register, Refill: self._refill, DeleteUser: self._delete,
            ListPools: self._pools, GetKmStatus: self._km_status, Sync: self._sync,
            MarkConsumed: lambda m: copies.mark_consumed(self, m), Audit: self._audit,
            ConsumeCopies: lambda m: copies.consume_here(self, m), AddRemote: self._add_remote,
            ShipSlice: self._ship, UnshipSlice: self._unship, SyncDone: self._sync_done,
            LaunchSync: self._launched, RetrySync: self._retry,
        }
        self._retries = RetryTimers(clock, "", lambda sae_id: None)

    # -- lifecycle -----------------------------------------------------------------------

    async def on_start(self) -> None:
        """Open the store; a restart starts from what it holds, with no sync state of before."""
        self._local = None
        self.sync = SyncScheduler(self.config.sync)
        self._launch, self._worker, self._waits = None, None, []
        self._retries = RetryTimers(self.clock, f"{self.config.seed}:{self.name}:retry",
                                    lambda sae_id: self.ref.tell(RetrySync(sae_id)))
        self._store = await KeyStore.open(self.config.db_path, inline=self.config.inline_store,
                                          master_key=self.config.master_key,
                                          cache_kib=self.config.store_cache_kib)
        self._schedule_sync()

    async def on_stop(self) -> None:
        self._retries.cancel_all()
        for timer in (self._timer, self._launch):  # a stopped LKM is told nothing more
            if timer is not None:
                timer.cancel()
        if self._worker is not None and not self._worker.done():
            self._worker.cancel()  # it gives back what it was relaying
            await asyncio.gather(self._worker, return_exceptions=True)
        dropped = self.sync.drop_all()
        for order in dropped:
            for wait in list(self._waits):
                if wait.settle(SyncOutcome(order.ticket, order.sae_id, "aborted")):
                    self._waits.remove(wait)
        if self._store is not None:
            await self._store.close()
            self._store = None

    def _schedule_sync(self) -> None:
        """The next scheduled sync, at the next multiple of the interval: the phase is absolute,
        so a restart keeps it (a restart at 12 h still syncs at 24 h, not at 36 h)."""
        interval_s = self.config.sync.interval_s
        now = self.clock.now()
        next_s = (math.floor(now / interval_s) + 1) * interval_s
        self.sync.scheduled_at(next_s)
        self._timer = self.clock.call_later(next_s - now, self._on_sync_timer)

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
        """Answer ETSI requests with one store hop: each request's own checks, then one
        transaction with a savepoint per request, then each request's reply, all in mailbox
        order. The outcome of a request is its reply or the error refusing it; a refused request
        hands out no key and does not disturb the others."""
        if self._local is None:
            self._local = await self.store.read(pools.local_users)
        plans: list[Plan | Exception] = []
        for message in messages:
            try:
                plans.append(plan(self, message))
            except Exception as error:  # noqa: BLE001 - the request's answer, in its place
                plans.append(error)
        txns = [p.transaction for p in plans if isinstance(p, Plan)]
        results = iter(await self.store.many(txns) if txns else ())
        outcomes: list[Any] = []
        for planned in plans:
            try:
                if isinstance(planned, Exception):
                    raise planned
                outcomes.append(await planned.reply(next(results)))
            except Exception as error:  # noqa: BLE001 - the request's answer, in its place
                outcomes.append(error)
        return outcomes

    # -- what the ETSI requests use (nodes.keynode.requests.KeyNode) ----------------------

    @property
    def store(self) -> KeyStore:
        assert self._store is not None, "LKM used before on_start"
        return self._store

    def now(self) -> float:
        return self.clock.now()

    def is_local(self, sae_id: str) -> bool:
        assert self._local is not None
        return sae_id in self._local

    def next_sync_s(self) -> float | None:
        return self.sync.next_scheduled_s

    def pool_changed(self, pool: PoolStatus) -> None:
        """Queue a threshold or emergency sync if the pool is below either level."""
        if self.sync.level(PoolLevel.of(pool), self.clock.now()) is not None:
            self._start_worker()

    async def pool_drained(self, sae_id: str, reserve_hit: bool = False) -> None:
        """As pool_changed; a pool that kept keys back for its reserve is topped up at once."""
        if (pool := await self.store.read(pools.status(sae_id))) is None:
            return
        if reserve_hit and self.sync.request("threshold", PoolLevel.of(pool)):
            self._start_worker()
        self.pool_changed(pool)

    async def open_slice(self, sae_id: str) -> bool:
        """A first request for a known remote SAE opens a slice of its pool here (filled by an
        emergency sync); False if ``sae_id`` is not homed at another LKM."""
        home = self.directory.home_of(sae_id)
        if home is None or home == self.name:
            return False
        if await self.store.read(pools.status(sae_id)) is None:
            await self._add_remote(AddRemote(sae_id, home, self._slice_size()))
            if self.sync.request("emergency", PoolLevel.of(await self._pool(sae_id))) is not None:
                self._start_worker()
        return True

    def consume_copies(self, held: dict[str, tuple[str, ...]]) -> list[asyncio.Task[None]]:
        return copies.send(self, held)

    # -- users ---------------------------------------------------------------------------

    async def _register(self, msg: Register) -> dict[str, Any]:
        check_sae_id(msg.sae_id)
        cfg = self.config
        limit, differs = cfg.pool_size_for(msg.initial_pool_size)
        materials = await self._fetch(msg.sae_id, limit, provision=True)
        now = self.clock.now()
        display = msg.display_name or (msg.user_email or msg.sae_id).split("@")[0]
        await self.store.run(pools.register(msg.sae_id, msg.user_email, display, limit,
                                            math.ceil(limit * cfg.sync.threshold),
                                            cfg.key_size_bits, materials, now))
        if self._local is not None:
            self._local.add(msg.sae_id)
        return {"success": True, "sae_id": msg.sae_id, "user_email": msg.user_email,
                "pool_size": limit, "keys_generated": len(materials), "registered_at": now,
                **differs}

    async def _add_remote(self, msg: AddRemote) -> None:
        threshold = math.ceil(msg.slice_size * self.config.sync.threshold)
        await self.store.run(pools.add_remote(msg.sae_id, msg.user_email, msg.home_lkm,
                                              msg.slice_size, threshold,
                                              self.config.key_size_bits, self.clock.now()))

    async def _delete(self, msg: DeleteUser) -> dict[str, Any]:
        deleted = await self.store.run(pools.delete_user(msg.sae_id))
        if self._local is not None:
            self._local.discard(msg.sae_id)
        return {"success": True, "sae_id": msg.sae_id, "keys_deleted": deleted}

    async def _refill(self, msg: Refill) -> dict[str, Any]:
        pool = await self._pool(msg.sae_id)
        if pool.is_slice:
            raise BadRequest("a slice of a remote pool is refilled by sync, not refill")
        room = max(pool.pool_size_limit - pool.available_keys, 0)
        wanted = room if msg.keys_to_add is None else min(max(msg.keys_to_add, 0), room)
        added = 0
        if wanted:
            materials = await self._fetch(msg.sae_id, wanted)
            added = await self.store.run(pools.add_keys(msg.sae_id, materials,
                                                        self.clock.now()))
        result = {"success": True, "sae_id": msg.sae_id, "keys_added": added,
                  "available_before": pool.available_keys,
                  "available_after": pool.available_keys + added}
        if not added:
            result["message"] = "pool is full" if not room else "nothing to add"
        return result

    async def _pool(self, sae_id: str) -> PoolStatus:
        pool = await self.store.read(pools.status(sae_id))
        if pool is None:
            raise NotFound(f"SAE '{sae_id}' is not registered at this KME", sae_id=sae_id)
        return pool

    def _slice_size(self) -> int:
        return max(self.config.min_pool_size, self.config.default_pool_size // 4)

    async def _audit(self, msg: Audit) -> dict[str, int]:
        return await self.store.read(audit.audit)

    # -- slices shipped to other LKMs -----------------------------------------------------

    async def _ship(self, msg: ShipSlice) -> list[Any]:
        keys = await self.store.run(shipping.ship(msg.owner, msg.to_lkm, msg.count,
                                                  self.clock.now()))
        if keys:
            self.observe("ship", self.name, pool=pool_node(self.name, msg.owner),
                         to=msg.to_lkm, keys=len(keys))
        await self.pool_drained(msg.owner, reserve_hit=len(keys) < msg.count)
        return keys

    async def _unship(self, msg: UnshipSlice) -> int:
        return await self.store.run(shipping.unship(msg.owner, msg.key_ids))

    # -- pools and sync ------------------------------------------------------------------------

    async def _pools(self, msg: ListPools | None = None) -> Any:
        if msg is not None and msg.levels_only:
            return await self.store.read(pools.levels)
        return pools_view(await self.store.read(pools.all_pools), self.sync.next_scheduled_s)

    async def _km_status(self, msg: GetKmStatus) -> dict[str, Any]:
        stats = await self.store.read(synclog.sync_stats)
        return {"local_km_id": self.config.local_km_id,
                "next_door_km_url": self.config.next_door_km_url,
                "next_door_km_available": self.sync.km_available,
                "last_sync": await self.store.read(synclog.last_sync_time),
                "next_sync": self.sync.next_scheduled_s,
                "sync_stats": {"total": stats.total, "successful": stats.successful,
                               "failed": stats.failed, "keys_received": stats.keys_received},
                "pools": await self._pools()}

    async def _sync(self, msg: Sync) -> Any:
        """Queue one order per chosen pool. The reply: the orders' tickets; with ``wait``, the
        outcomes, once they have all ended."""
        if msg.reason not in SYNC_REASONS:
            raise BadRequest(f"unknown sync reason {msg.reason!r}")
        if msg.users:
            targets = [await self._pool(sae_id) for sae_id in msg.users]
        else:
            targets = [p for p in await self.store.read(pools.all_pools)
                       if p.available_keys < p.pool_size_limit]
        orders = [order for order in (self.sync.request(msg.reason, PoolLevel.of(p)) for p in targets)
                  if order is not None]
        if orders:
            self._start_worker(at_once=msg.wait)
        if not msg.wait:
            return tuple(order.ticket for order in orders)
        promise = self.defer_reply() if orders else None
        if promise is None:
            return []
        self._waits.append(SyncWait(promise, {order.ticket: None for order in orders}))
        return None

    def _start_worker(self, at_once: bool = False) -> None:
        """Have the worker carry out the queued orders: in a clock step of its own, or at once
        for a caller that waits for them (nothing of its own runs meanwhile)."""
        if self.sync.worker_busy:
            return
        if at_once:
            self._begin_work()
        elif self._launch is None:
            self._launch = self.clock.call_later(0.0, lambda: self.ref.tell(LaunchSync()))

    async def _retry(self, msg: RetrySync) -> None:
        try:
            pool = await self._pool(msg.sae_id)
        except NotFound:  # deleted meanwhile
            self.sync.forget(msg.sae_id)
            return
        if self.sync.request("retry", PoolLevel.of(pool)) is not None:
            self._start_worker()

    async def _launched(self, msg: LaunchSync) -> None:
        self._launch = None
        self._begin_work()

    def _begin_work(self) -> None:
        if not self.sync.worker_busy and (order := self.sync.take()) is not None:
            worker = SyncWorker(self.name, self.ref, self.supply, self.clock)
            self._worker = self.start_task(worker.run(order))

    async def _sync_done(self, msg: SyncDone) -> SyncNext:
        order: SyncOrder = msg.order  # type: ignore[assignment]
        if self.sync.current is None or self.sync.current.ticket != order.ticket:
            return SyncNext(None, kept=False)  # a worker of before a restart: keep nothing
        now = self.clock.now()
        received = 0
        if msg.outcome == "ok" and msg.keys:
            received = await self.store.run(shipping.store_slice(order.sae_id, msg.keys,  # type: ignore[arg-type]
                                                                 now))
        elif msg.outcome == "ok":
            received = await self.store.run(pools.add_keys(order.sae_id, msg.materials, now))
        duration_s = now - msg.start_s
        await self.store.run(synclog.record_sync(msg.start_s, order.reason, order.sae_id,
                                                 order.asked, received, duration_s,
                                                 msg.outcome))
        named = {} if msg.error is None else {"error": msg.error}
        self.observe("sync", self.name, pool=pool_node(self.name, order.sae_id),
                     reason=order.reason, outcome=msg.outcome, keys_requested=order.asked,
                     keys_received=received, duration_s=duration_s, **named)
        outcome = SyncOutcome(order.ticket, order.sae_id, msg.outcome, received)
        self._waits = [wait for wait in self._waits if not wait.settle(outcome)]
        following = self.sync.finished(order, msg.outcome, now, received)
        failed = msg.outcome in FAILED_OUTCOMES or (msg.outcome == "ok" and received == 0)
        self._retries.plan(order.sae_id, self.sync.backoff_s(order.sae_id) if failed else None)
        return SyncNext(following, kept=not msg.keys or received == len(msg.keys))

    async def _fetch(self, sae_id: str, count: int, provision: bool = False) -> list[bytes]:
        if count <= 0:
            return []
        try:
            return await self.supply.fetch(self.name, sae_id, count, self.config.key_bytes,
                                           provision)
        except KMUnreachable:
            self.sync.km_available = False
            return []

