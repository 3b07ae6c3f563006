"""A served LKM answers the ETSI requests queued in its mailbox together: one store transaction,
a savepoint per request, each request all-or-nothing and answered with its own outcome."""

from __future__ import annotations

import asyncio
from typing import Any

from nodes.keynode.errors import BadRequest, InsufficientKeys, KeysNotFound, NotFound, Unauthorized
from nodes.keynode.messages import GetKeys, GetKeysWithIds, GetStatus, Refill
from nodes.keynode.store import Key
from tests.support import API, Node, decoded, pool_status, store_audit

ALICE, BOB, CAROL, EVE = "SAE_ALICE_001", "SAE_BOB_001", "SAE_CAROL_001", "SAE_EVE_001"


def batch_sizes(node: Node) -> list[int]:
    """Record the number of requests of each store transaction the LKM runs from now on."""
    store = node.lkm.store
    assert store is not None
    sizes: list[int] = []
    many = store.many

    async def counted(txns: Any) -> list[Any]:
        sizes.append(len(txns))
        return await many(txns)

    store.many = counted  # type: ignore[method-assign]
    return sizes


async def ask_all(node: Node, *messages: object) -> list[Any]:
    """Queue every message before the LKM takes the first (so they arrive as one batch)."""
    assert node.served is not None and node.served.ref is not None
    ref = node.served.ref
    return list(await asyncio.gather(*(ref.ask(m) for m in messages), return_exceptions=True))


async def available(node: Node, sae: str) -> int:
    pool = await pool_status(node.lkm.store, sae)
    return pool.available_keys


async def test_many_concurrent_enc_keys_over_http_get_distinct_keys_and_exact_pool_counts(
        node: Node) -> None:
    for sae in (ALICE, BOB):
        await node.register(sae, pool=400)  # 64 x 2 keys leave both above the sync threshold
    sizes = batch_sizes(node)
    replies = await asyncio.gather(*(
        node.call(ALICE if i % 2 else BOB, "POST", f"{API}/{BOB if i % 2 else ALICE}/enc_keys",
                  json={"number": 2, "size": 256 if i % 4 < 2 else 8192})
        for i in range(128)))
    assert [status for status, _ in replies] == [200] * 128
    keys = {k: v for _, body in replies for k, v in decoded(body["keys"]).items()}
    assert len(keys) == 256 and len(set(keys.values())) == 256
    assert sum(sizes) == 128 and max(sizes) > 1  # some arrived while the store was busy
    for sae in (ALICE, BOB):  # 32 x 2 whole keys, and 32 x 2 x 256 bits carved from 2 rows
        pool = await pool_status(node.lkm.store, sae)
        assert (pool.available_keys, pool.used_keys) == (400 - 64 - 2, 128)
        assert pool.available_bits == (400 - 64) * 8192 - 64 * 256
    audit = await store_audit(node.lkm.store)
    assert audit["duplicate_material"] == 0 and audit["counter_mismatches"] == 0


async def test_a_refused_request_in_a_batch_gets_its_own_error_and_the_others_their_keys(
        node: Node) -> None:
    for sae in (ALICE, BOB, CAROL):
        await node.register(sae, pool=20)
    sizes = batch_sizes(node)
    replies = await ask_all(
        node,
        GetKeys(ALICE, BOB, number=2),
        GetKeys(ALICE, "SAE_NOBODY", number=1),      # 404 from the store
        GetKeys(ALICE, BOB, number=19),              # 503: 18 left, nothing taken
        GetKeys(EVE, BOB, number=1),                 # 401 before the store
        GetKeys(ALICE, BOB, number=101),             # 400 before the store
        GetKeys(ALICE, ALICE, number=1),             # 400 from the store (caller as slave)
        GetStatus(ALICE, BOB),
        GetKeys(CAROL, BOB, number=3),
        GetStatus(EVE, BOB))                         # 401 after the pool is found
    assert sizes == [7]
    kinds = [type(r) for r in replies]
    assert kinds == [list, NotFound, InsufficientKeys, Unauthorized, BadRequest, BadRequest,
                     dict, list, Unauthorized]
    assert replies[6]["stored_key_count"] == 18  # the status sees the first delivery only
    taken = [key for reply in (replies[0], replies[7]) for key in reply]
    assert all(isinstance(k, Key) for k in taken) and len({k.key_id for k in taken}) == 5
    assert await available(node, BOB) == 20 - 5
    assert await available(node, ALICE) == 20  # the refused self-request took nothing


async def test_a_batch_of_dec_keys_with_a_duplicate_read_answers_exactly_one(node: Node) -> None:
    for sae in (ALICE, BOB, CAROL):
        await node.register(sae, pool=20)
    status, body = await node.call(ALICE, "POST", f"{API}/{BOB}/enc_keys", json={"number": 3})
    assert status == 200
    ids = tuple(key["key_ID"] for key in body["keys"])
    sizes = batch_sizes(node)
    replies = await ask_all(
        node,
        GetKeysWithIds(BOB, ALICE, ids[:1]),
        GetKeysWithIds(BOB, ALICE, ids[:2]),         # the first was read: nothing of this one
        GetKeysWithIds(CAROL, ALICE, ids[1:2]),      # not CAROL's key
        GetKeysWithIds(BOB, ALICE, ids[1:]),
        GetKeysWithIds(BOB, ALICE, ids[:1]))
    assert sizes == [5]
    kinds = [list if isinstance(r, list) else type(r) for r in replies]
    assert kinds == [list, KeysNotFound, Unauthorized, list, KeysNotFound]
    assert [k.key_id for k in replies[0] + replies[3]] == list(ids)
    assert decoded(body["keys"]) == {k.key_id: k.material for k in replies[0] + replies[3]}
    audit = await store_audit(node.lkm.store)
    assert audit.get("status_1", 0) == 0 and audit["status_2"] == 3


async def test_parallel_dec_keys_over_http_read_a_key_exactly_once(node: Node) -> None:
    for sae in (ALICE, BOB):
        await node.register(sae, pool=20)
    status, body = await node.call(ALICE, "POST", f"{API}/{BOB}/enc_keys", json={"number": 4})
    ids = [key["key_ID"] for key in body["keys"]]
    replies = await asyncio.gather(*(
        node.call(BOB, "POST", f"{API}/{ALICE}/dec_keys",
                  json={"key_IDs": [{"key_ID": ids[i % 4]}]}) for i in range(32)))
    winners = [body for status, body in replies if status == 200]
    assert sorted(k["key_ID"] for b in winners for k in b["keys"]) == sorted(ids)
    assert sorted(status for status, _ in replies) == [200] * 4 + [400] * 28


async def test_another_message_between_key_requests_splits_the_batch_in_mailbox_order(
        node: Node) -> None:
    for sae in (ALICE, BOB):
        await node.register(sae, pool=20)
    sizes = batch_sizes(node)
    replies = await ask_all(
        node, GetKeys(ALICE, BOB, number=18), GetKeys(ALICE, BOB, number=3),  # 503: 2 left
        Refill(BOB), GetKeys(ALICE, BOB, number=2), GetKeys(ALICE, BOB, number=2))
    assert sizes == [2, 2]  # the refill ran between the two batches, not before or after
    assert [type(r) for r in replies] == [list, InsufficientKeys, dict, list, list]
    assert replies[2]["keys_added"] == 18


async def test_under_the_virtual_clock_the_lkm_takes_key_requests_one_by_one(tmp_path) -> None:
    node = Node(tmp_path, inline_store=True)
    await node.start()
    try:
        assert node.lkm.batchable == frozenset()
        await node.register(ALICE)
        await node.register(BOB)
        sizes = batch_sizes(node)
        replies = await ask_all(node, *(GetKeys(ALICE, BOB) for _ in range(4)))
        assert sizes == [1, 1, 1, 1] and all(isinstance(r, list) for r in replies)
    finally:
        await node.close()
