"""The hybrid sync policy: first as a pure scheduler (no actors, no clock), then its failures
injected into a served LKM: every sync ends with an outcome, a waiting caller always gets an
answer, and a restart forgets what was in flight."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from nodes.keynode.config import SyncPolicy
from nodes.keynode.errors import KMUnreachable
from nodes.keynode.lkm import LocalKeyManager
from nodes.keynode.messages import GetKmStatus, Refill, Sync
from nodes.keynode.supply import LocalKeySupply
from nodes.keynode.sync import PoolLevel, SyncScheduler
from simulator import Directive
from tests.support import API, Node

POLICY = SyncPolicy(interval_s=86400.0, threshold=0.10, emergency=0.05)
ALICE, BOB = "SAE_ALICE_001", "SAE_BOB_001"


def pool(sae: str = BOB, keys: int = 100, limit: int = 100) -> PoolLevel:
    return PoolLevel(sae, keys, limit, 8192)


# -- the scheduler alone ----------------------------------------------------------------------

def test_a_pool_below_threshold_then_emergency_gets_one_order_at_a_time() -> None:
    plan = SyncScheduler(POLICY)
    assert plan.level(pool(keys=10), 0.0) is None  # 10 % is not below 10 %
    order = plan.level(pool(keys=9), 0.0)
    assert order is not None and (order.reason, order.asked) == ("threshold", 91)
    assert plan.level(pool(keys=2), 1.0) is None  # in flight already
    assert plan.take() == order and plan.worker_busy
    plan.check()
    assert plan.finished(order, "ok", 2.0) is None and not plan.worker_busy
    emergency = plan.level(pool(keys=4), 3.0)
    assert emergency is not None and emergency.reason == "emergency"
    plan.check()


def test_the_worker_takes_orders_in_the_order_they_were_queued() -> None:
    plan = SyncScheduler(POLICY)
    first = plan.request("manual", pool(ALICE, keys=50))
    second = plan.request("scheduled", pool(BOB, keys=0))
    assert plan.request("manual", pool(BOB, keys=0)) is None  # Bob's is queued already
    assert plan.request("manual", pool("SAE_FULL", keys=100)) is None  # nothing to fetch
    assert plan.take() == first
    assert plan.finished(first, "ok", 1.0) == second
    assert plan.finished(second, "ok", 2.0) is None
    plan.check()


def test_after_an_unreachable_outcome_level_syncs_wait_but_requested_ones_do_not() -> None:
    plan = SyncScheduler(POLICY, retry_s=300.0)
    order = plan.level(pool(keys=0), 0.0)
    assert order is not None and plan.take() == order
    plan.finished(order, "unreachable", 10.0)
    assert not plan.km_available
    assert plan.level(pool(keys=0), 309.0) is None
    manual = plan.request("manual", pool(keys=0))
    assert manual is not None and plan.take() == manual
    plan.finished(manual, "error", 311.0)  # an error is no sign of the KM: no new wait
    assert plan.level(pool(keys=0), 311.0) is not None


def test_dropping_everything_leaves_no_pool_in_flight() -> None:
    plan = SyncScheduler(POLICY)
    running = plan.request("manual", pool(ALICE, keys=0))
    queued = plan.request("manual", pool(BOB, keys=0))
    plan.take()
    assert plan.drop_all() == [running, queued]
    plan.check()
    assert plan.request("manual", pool(BOB, keys=0)) is not None


# -- failures injected into a served LKM ------------------------------------------------------

class ScriptedSupply(LocalKeySupply):
    """Generates keys, except that the next fetches can be made to raise or to block."""

    def __init__(self) -> None:
        super().__init__(lambda n: bytes(n))
        self.failures: list[BaseException] = []
        self.gate: asyncio.Event | None = None
        self.fetching = asyncio.Event()

    async def fetch(self, lkm_id: str, sae_id: str, count: int, key_bytes: int,
                    provision: bool = False) -> list[bytes]:
        if not provision:
            self.fetching.set()
            if self.failures:
                raise self.failures.pop(0)
            if self.gate is not None:
                await self.gate.wait()
        return await super().fetch(lkm_id, sae_id, count, key_bytes, provision)


class Events(list):
    def __call__(self, kind: str, node: str, **data: Any) -> None:
        self.append((kind, data))


async def drain(node: Node, sae: str, keys: int) -> None:
    status, _ = await node.call(ALICE, "POST", f"{API}/{sae}/enc_keys", json={"number": keys})
    assert status == 200


@pytest.mark.parametrize("error", [RuntimeError("the KM answered nonsense"), KMUnreachable()])
async def test_a_sync_whose_fetch_fails_in_any_way_ends_with_an_outcome_and_can_run_again(
        tmp_path, error: BaseException) -> None:
    supply, events = ScriptedSupply(), Events()
    node = await Node(tmp_path, supply=supply, observe=events).start()
    try:
        for sae in (ALICE, BOB):
            await node.register(sae, pool=20)
        await drain(node, BOB, 5)
        supply.failures.append(error)
        status, body = await node.call(ALICE, "POST", f"{API}/km/sync", json={"users": [BOB]})
        outcome = "error" if isinstance(error, RuntimeError) else "unreachable"
        assert status == 200 and body["errors"] == [{"sae_id": BOB, "error": outcome}]
        [(_, sync)] = [e for e in events if e[0] == "sync"]
        assert sync["outcome"] == outcome
        assert sync.get("error") == ("RuntimeError: the KM answered nonsense"
                                     if outcome == "error" else None)
        status, body = await node.call(ALICE, "POST", f"{API}/km/sync", json={"users": [BOB]})
        assert status == 200 and body["success"] and body["users_synced"] == [BOB]
        assert node.system.failures == []
    finally:
        await node.close()


async def test_a_waiting_manual_sync_is_answered_aborted_when_its_lkm_stops(tmp_path) -> None:
    supply = ScriptedSupply()
    node = await Node(tmp_path, supply=supply).start()
    try:
        for sae in (ALICE, BOB):
            await node.register(sae, pool=20)
        await drain(node, BOB, 5)
        supply.gate = asyncio.Event()  # the fetch hangs until the LKM stops
        ref = node.served.ref
        waiting = ref.ask(Sync("manual", (BOB,), wait=True))
        await asyncio.wait_for(supply.fetching.wait(), 5)
        await node.system.stop(ref.name)
        assert await asyncio.wait_for(waiting, 5) == [
            {"sae_id": BOB, "outcome": "aborted", "keys_received": 0}]
        assert node.system.failures == [] and node.system.activity.busy == 0
    finally:
        node.served.ref = None  # stopped already
        await node.close()


class RestartingLKM(LocalKeyManager):
    async def on_failure(self, message: object, error: BaseException) -> Directive:
        return Directive.RESTART


async def test_a_restart_forgets_the_syncs_in_flight_and_syncs_again(tmp_path) -> None:
    supply = ScriptedSupply()
    node = await Node(tmp_path, supply=supply).start()
    served = node.served
    try:
        for sae in (ALICE, BOB):
            await node.register(sae, pool=20)
        await drain(node, BOB, 5)
        lkm = RestartingLKM(served.config, served.clock, supply)
        await node.system.stop(served.lkm.name)
        served.lkm = lkm
        served.ref = ref = await node.system.spawn(lkm)
        supply.gate = asyncio.Event()
        assert len(await ref.ask(Sync("manual", (BOB,)))) == 1
        await asyncio.wait_for(supply.fetching.wait(), 5)
        assert lkm.sync.current is not None  # Bob's sync hangs in flight
        ref.tell(Refill("SAE_NOBODY"))  # a failed tell: the supervisor restarts the LKM
        await asyncio.sleep(0.05)
        assert [(f.message, f.directive) for f in node.system.failures] == [
            ("Refill", "restart")]
        assert lkm.sync.current is None
        supply.gate = None
        results = await asyncio.wait_for(ref.ask(Sync("manual", (BOB,), wait=True)), 5)
        assert results == [{"sae_id": BOB, "outcome": "ok", "keys_received": 5}]
        status = await ref.ask(GetKmStatus())
        assert status["sync_stats"]["successful"] == 1
    finally:
        await node.close()
