"""Key material at rest (issue 21): sealed under the node's master key, a copied database file
shows none of it, and a file is refused under any key but its own."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from nodes.keynode.config import ConfigError
from nodes.keynode.store import KeyStore, delivery, pools, shipping
from nodes.keynode.store.sealing import NONCE_BYTES
from nodes.keynode.supply import LocalKeySupply
from tests.support import API, Node, served, store_audit, stored_rows

ALICE, BOB = "SAE_ALICE_001", "SAE_BOB_001"
MASTER_KEY, OTHER_KEY = bytes(range(32)), bytes(range(1, 33))
KEY_BITS = 8192


class RememberingRandom:
    """os.urandom that keeps what it gave: every key a node's pools were filled with."""

    def __init__(self) -> None:
        self.given: list[bytes] = []

    def __call__(self, n: int) -> bytes:
        self.given.append(os.urandom(n))
        return self.given[-1]


def file_copy_bytes(db_path: Path, into: Path) -> bytes:
    """What a thief would have: a copy of the database file and its WAL, as they are now."""
    into.mkdir()
    copied = b""
    for suffix in ("", "-wal"):
        source = Path(str(db_path) + suffix)
        if source.exists():
            copied += shutil.copy(source, into / source.name).read_bytes()
    return copied


def betrayed(copy: bytes, material: bytes) -> bool:
    """Whether the copy holds the material, or its first or last 16 bytes."""
    return any(part in copy for part in (material, material[:16], material[-16:]))


@pytest.mark.parametrize("master_key", [MASTER_KEY, None], ids=["sealed", "plain"])
async def test_a_copied_database_shows_key_material_only_when_no_master_key_is_set(
        tmp_path: Path, master_key: bytes | None) -> None:
    random = RememberingRandom()
    async with served(tmp_path, supply=LocalKeySupply(random), master_key=master_key) as node:
        await node.register(ALICE)
        await node.register(BOB)
        status, reply = await node.call(ALICE, "POST", f"{API}/{BOB}/enc_keys",
                                        json={"number": 3})
        assert status == 200, reply
        delivered = {k["key_ID"]: base64.b64decode(k["key"]) for k in reply["keys"]}
        undelivered = [m for m in random.given if m not in delivered.values()][::10]
        copy = file_copy_bytes(tmp_path / "lkm.db", tmp_path / "copy")

        assert len(delivered) == 3 and len(undelivered) >= 9
        assert [betrayed(copy, m) for m in [*delivered.values(), *undelivered]] == \
            [master_key is None] * (len(delivered) + len(undelivered))
        ids = {"key_IDs": [{"key_ID": key_id} for key_id in delivered]}
        status, reply = await node.call(BOB, "POST", f"{API}/{ALICE}/dec_keys", json=ids)
        assert status == 200, reply
        assert {k["key_ID"]: base64.b64decode(k["key"]) for k in reply["keys"]} == delivered
        audit = await store_audit(node.lkm.store)
        assert (audit["duplicate_material"], audit["counter_mismatches"]) == (0, 0)


async def test_a_node_whose_stored_value_was_moved_to_another_row_answers_503_without_detail(
        tmp_path: Path) -> None:
    async with served(tmp_path, master_key=MASTER_KEY) as node:
        await node.register(ALICE)
        await node.register(BOB)
        first, second = f"qk_{BOB}_000001", f"qk_{BOB}_000002"
        await node.lkm.store.run(lambda db: db.execute(
            "UPDATE quantum_keys SET key_data = (SELECT key_data FROM quantum_keys WHERE"
            " key_id = ?) WHERE key_id = ?", (second, first)))
        status, reply = await node.call(ALICE, "POST", f"{API}/{BOB}/enc_keys",
                                        json={"number": 1})
        assert (status, reply) == (503, {"message": "internal error on the key manager"})
        status, reply = await node.call(ALICE, "GET", f"{API}/{BOB}/status")
        assert status == 200 and reply["stored_key_count"] == 50, reply


@pytest.fixture(params=[False, True], ids=["aiosqlite", "inline"])
def inline(request: pytest.FixtureRequest) -> Any:
    return request.param


async def store_one_key(path: Path, inline: bool, master_key: bytes | None) -> bytes:
    store = await KeyStore.open(path, inline=inline, master_key=master_key)
    material = os.urandom(KEY_BITS // 8)
    await store.run(pools.register(BOB, None, None, 10, 1, KEY_BITS, [material], 0.0))
    await store.close()
    return material


async def take_one_key(path: Path, inline: bool, master_key: bytes | None) -> bytes:
    store = await KeyStore.open(path, inline=inline, master_key=master_key)
    [key], _ = await store.run(delivery.reservation(BOB, ALICE, BOB, 1, KEY_BITS, 1.0))
    await store.close()
    return key.material


async def test_a_sealed_store_is_refused_under_another_key_and_without_one(
        tmp_path: Path, inline: bool) -> None:
    path = tmp_path / "sealed.db"
    material = await store_one_key(path, inline, MASTER_KEY)
    with pytest.raises(ConfigError, match="not the master key its key material is sealed under"
                       ) as wrong:
        await KeyStore.open(path, inline=inline, master_key=OTHER_KEY)
    with pytest.raises(ConfigError, match="sealed under a master key: set KEY_AT_REST_FILE"
                       ) as missing:
        await KeyStore.open(path, inline=inline)
    for error in (wrong.value, missing.value):
        assert str(path) in str(error)
        assert MASTER_KEY.hex() not in str(error) and OTHER_KEY.hex() not in str(error)
    assert await take_one_key(path, inline, MASTER_KEY) == material  # its own key still opens it


async def test_a_plain_store_is_refused_under_a_master_key(tmp_path: Path, inline: bool) -> None:
    path = tmp_path / "plain.db"
    material = await store_one_key(path, inline, None)
    with pytest.raises(ConfigError, match="written without a master key"):
        await KeyStore.open(path, inline=inline, master_key=MASTER_KEY)
    assert await take_one_key(path, inline, None) == material


async def test_two_connections_opening_a_fresh_file_under_one_key_both_open_it(
        tmp_path: Path) -> None:
    for attempt in range(5):  # a race: each attempt is a fresh file opened twice at once
        path = tmp_path / f"fresh{attempt}.db"
        opened = await asyncio.gather(*(KeyStore.open(path, master_key=MASTER_KEY)
                                        for _ in range(2)), return_exceptions=True)
        for store in opened:  # close what opened before asserting, or its thread outlives us
            if isinstance(store, KeyStore):
                await store.close()
        assert all(isinstance(store, KeyStore) for store in opened), opened
        with contextlib.closing(sqlite3.connect(path)) as db:
            assert db.execute("SELECT COUNT(*) FROM key_at_rest").fetchall() == [(1,)]
        assert await store_one_key(path, False, MASTER_KEY)


async def test_a_node_with_the_wrong_master_key_does_not_start(tmp_path: Path) -> None:
    async with served(tmp_path, master_key=MASTER_KEY) as node:
        await node.register(BOB)
    with pytest.raises(ConfigError, match="USER_KEY_POOL_DB .*lkm.db.*: not the master key"):
        await Node(tmp_path, master_key=OTHER_KEY).start()


async def test_carved_joined_and_shipped_keys_round_trip_sealed(tmp_path: Path) -> None:
    """Every write and read of key material under sealing: pools filled, keys carved from a
    row (the rest written back), joined, shipped to a slice and read back at home."""
    home = await KeyStore.open(tmp_path / "home.db", master_key=MASTER_KEY)
    remote = await KeyStore.open(tmp_path / "remote.db", inline=True, master_key=OTHER_KEY)
    try:
        materials = [os.urandom(KEY_BITS // 8) for _ in range(12)]
        await home.run(pools.register(BOB, None, None, 20, 1, KEY_BITS, materials, 0.0))
        await remote.run(pools.add_remote(BOB, None, "LKM_B", 10, 1, KEY_BITS, 0.0))
        carved, _ = await home.run(delivery.reservation(BOB, ALICE, BOB, 3, 128, 1.0))
        assert [k.material for k in carved] == [materials[0][i * 16:(i + 1) * 16]
                                               for i in range(3)]
        [joined], _ = await home.run(delivery.reservation(BOB, ALICE, BOB, 1, 2 * KEY_BITS, 1.0))
        assert joined.material == materials[1] + materials[2]
        rest, _ = await home.run(delivery.reservation(BOB, ALICE, BOB, 1, 64, 1.0))
        assert rest[0].material == materials[0][48:56]  # from the row written back sealed
        shipped = await home.run(shipping.ship(BOB, "LKM_A", 4, 2.0))
        assert [k.material for k in shipped] == materials[3:7]
        await remote.run(shipping.store_slice(BOB, shipped, 2.0))
        from_slice, _ = await remote.run(delivery.reservation(BOB, ALICE, BOB, 2, KEY_BITS, 3.0))
        read = await home.run(delivery.slave_read(BOB, ALICE, [k.key_id for k in from_slice],
                                                  4.0, master_home="LKM_A"))
        assert read == from_slice and [k.material for k in read] == materials[3:5]
        for store in (home, remote):
            rows = await stored_rows(store, "SELECT key_data FROM quantum_keys"
                                            " WHERE key_data IS NOT NULL")
            assert rows and not any(betrayed(bytes(stored), m)
                                    for (stored,) in rows for m in materials)
            assert all(len(stored) >= NONCE_BYTES + 16 + 8 for (stored,) in rows)
    finally:
        await home.close()
        await remote.close()


async def test_the_audit_still_finds_material_stored_twice_when_sealed(tmp_path: Path) -> None:
    store = await KeyStore.open(tmp_path / "keys.db", master_key=MASTER_KEY)
    try:
        twice = os.urandom(KEY_BITS // 8)
        await store.run(pools.register(BOB, None, None, 10, 1, KEY_BITS,
                                       [twice, os.urandom(KEY_BITS // 8), twice], 0.0))
        assert (await store_audit(store))["duplicate_material"] == 1
    finally:
        await store.close()
