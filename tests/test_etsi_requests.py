"""The ETSI requests' refusal order is one table (nodes/keynode/requests.py REFUSAL_ORDER). Each
case below breaks one or more of a request's rules on purpose; the answer must be the error of
the rule the table puts first, so reordering the table without the code (or the code without
the table) fails here."""

from __future__ import annotations

from pathlib import Path

import pytest

from nodes.keynode import SenderQuota
from nodes.keynode.messages import GetKeys, GetKeysWithIds, GetStatus
from nodes.keynode.requests import REFUSAL_ORDER
from tests.support import API, Node, served

ALICE, BOB, CAROL, EVE, NOBODY = ("SAE_ALICE_001", "SAE_BOB_001", "SAE_CAROL_001",
                                  "SAE_EVE_001", "SAE_NOBODY")
MESSAGES = {  # rule -> words of its messages, to tell apart two rules with the same status
    "bounds": ("number", "size"), "not_self": ("differ",), "count": ("at most",),
    "slave_pool": ("registered",), "caller": ("registered",), "enough": ("not enough",),
    "slave_of_keys": ("slave",), "keys_held": ("not found",), "quota": ("quota",),
}
#: a sender quota that lets Alice take 60 keys of Bob's pool, refilling too slowly to matter
QUOTA = SenderQuota(keys_per_hour=0.001, burst=60)


def cases(ids: list[str]) -> list[tuple[object, set[str]]]:
    """(message, the rules it breaks); ``ids`` are three keys Alice took from Bob's pool."""
    many = [f"qk_{BOB}_{i:06d}" for i in range(1, 102)]
    return [
        (GetStatus(ALICE, NOBODY), {"slave_pool"}),
        (GetStatus(EVE, BOB), {"caller"}),
        (GetStatus(EVE, NOBODY), {"slave_pool", "caller"}),
        (GetKeys(EVE, BOB, number=0), {"caller", "bounds"}),
        (GetKeys(EVE, NOBODY), {"caller", "slave_pool"}),
        (GetKeys(ALICE, NOBODY, number=0), {"bounds", "slave_pool"}),
        (GetKeys(ALICE, NOBODY), {"slave_pool"}),
        (GetKeys(ALICE, ALICE, number=0), {"bounds", "not_self"}),
        (GetKeys(ALICE, ALICE, number=50), {"not_self", "enough"}),
        (GetKeys(ALICE, BOB, number=50), {"enough"}),
        (GetKeys(ALICE, BOB, size_bits=12), {"bounds"}),
        (GetKeys(ALICE, BOB, number=61), {"bounds", "enough"}),  # more than the quota's burst
        (GetKeys(ALICE, BOB, number=58), {"quota", "enough"}),  # 57 left of the 60
        (GetKeys(ALICE, BOB, number=58, size_bits=12), {"bounds", "quota"}),
        (GetKeysWithIds(EVE, ALICE, tuple(many)), {"caller", "count"}),
        (GetKeysWithIds(BOB, ALICE, tuple(many)), {"count", "keys_held"}),
        (GetKeysWithIds(CAROL, ALICE, (*ids[:1], "qk_unknown")), {"slave_of_keys", "keys_held"}),
        (GetKeysWithIds(CAROL, ALICE, tuple(ids[:2])), {"slave_of_keys"}),
        (GetKeysWithIds(BOB, ALICE, ("qk_unknown",)), {"keys_held"}),
    ]


def first_broken(message: object, broken: set[str]) -> str:
    return next(rule.key for rule in REFUSAL_ORDER[type(message)] if rule.key in broken)


async def test_every_request_is_refused_by_the_first_rule_the_table_lists(tmp_path: Path) -> None:
    async with served(tmp_path, sender_quota=QUOTA) as node:
        await refused_in_table_order(node)


async def refused_in_table_order(node: Node) -> None:
    for sae in (ALICE, BOB, CAROL):
        await node.register(sae, pool=20)
    status, body = await node.call(ALICE, "POST", f"{API}/{BOB}/enc_keys", json={"number": 3})
    assert status == 200
    ids = [key["key_ID"] for key in body["keys"]]
    ref = node.served.ref
    seen: set[tuple[type, str]] = set()
    for message, broken in cases(ids):
        key = first_broken(message, broken)
        [rule] = [r for r in REFUSAL_ORDER[type(message)] if r.key == key]
        with pytest.raises(rule.error) as refused:
            await ref.ask(message)
        assert refused.value.status == rule.status
        assert any(word in refused.value.message for word in MESSAGES[key]), (message, key)
        seen.add((type(message), key))
    table = {(kind, rule.key) for kind, rules in REFUSAL_ORDER.items() for rule in rules}
    assert seen == table  # every rule of the table was the deciding one at least once
    status, body = await node.call(BOB, "POST", f"{API}/{ALICE}/dec_keys",
                                   json={"key_IDs": [{"key_ID": i} for i in ids]})
    assert status == 200 and len(body["keys"]) == 3  # no refusal consumed or spent anything
