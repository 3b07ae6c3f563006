"""The SQLite key store: reservation never twice, all-or-nothing, erasure, bit accounting."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

import pytest

from nodes.keynode.errors import (
    AlreadyRegistered,
    BadRequest,
    InsufficientKeys,
    KeysNotFound,
    NotFound,
    Unauthorized,
)
from nodes.keynode.store import Key, KeyState, KeyStore, audit, delivery, pools, shipping
from tests.support import pool_status, store_audit

KEY_BITS = 8192


@pytest.fixture(params=[False, True], ids=["aiosqlite", "inline"])
async def store(tmp_path: Path, request: pytest.FixtureRequest):
    """Every store test runs both ways the store reaches SQLite: aiosqlite's thread (served
    nodes) and inline on the loop (the simulator's virtual clock)."""
    opened = await KeyStore.open(tmp_path / "keys.db", inline=request.param)
    try:
        yield opened
    finally:
        await opened.close()


async def register(store: KeyStore, sae: str, keys: int = 20, email: str | None = None) -> list[bytes]:
    materials = [os.urandom(KEY_BITS // 8) for _ in range(keys)]
    await store.run(pools.register(sae, email or f"{sae}@example.com", sae, keys, 2, KEY_BITS,
                                   materials, 0.0))
    return materials


async def reserve(store: KeyStore, owner: str, master: str, slave: str, number: int,
                  size_bits: int, now: float) -> list[Key]:
    keys, _ = await store.run(delivery.reservation(owner, master, slave, number, size_bits, now))
    return keys


async def take_for_slave(store: KeyStore, caller: str, master: str, key_ids: list[str],
                         now: float, master_home: str | None = None) -> list[Key]:
    return await store.run(delivery.slave_read(caller, master, key_ids, now, master_home))


async def test_registering_an_existing_sae_or_email_is_refused_and_changes_nothing(store) -> None:
    await register(store, "bob")
    with pytest.raises(AlreadyRegistered):
        await register(store, "bob", email="other@example.com")
    with pytest.raises(AlreadyRegistered):
        await register(store, "carol", email="bob@example.com")
    assert await pool_status(store, "carol") is None
    assert (await pool_status(store, "bob")).available_keys == 20


async def test_whole_keys_are_reserved_oldest_first_with_seed_ids(store) -> None:
    materials = await register(store, "bob")
    keys = await reserve(store, "bob", "alice", "bob", 3, KEY_BITS, 1.0)
    assert [k.key_id for k in keys] == ["qk_bob_000001", "qk_bob_000002", "qk_bob_000003"]
    assert [k.material for k in keys] == materials[:3]
    pool = await pool_status(store, "bob")
    assert (pool.available_keys, pool.used_keys, pool.total_keys) == (17, 3, 20)


async def test_a_request_larger_than_the_pool_takes_nothing(store) -> None:
    await register(store, "bob", keys=5)
    with pytest.raises(InsufficientKeys):
        await reserve(store, "bob", "alice", "bob", 6, KEY_BITS, 1.0)
    assert (await pool_status(store, "bob")).available_keys == 5


async def test_short_keys_are_carved_from_one_stored_key_and_accounted_in_bits(store) -> None:
    materials = await register(store, "bob", keys=2)
    keys = await reserve(store, "bob", "alice", "bob", 33, 256, 1.0)
    assert len({k.key_id for k in keys}) == 33
    assert all(len(k.material) == 32 for k in keys)
    assert b"".join(k.material for k in keys) == materials[0] + materials[1][:32]
    pool = await pool_status(store, "bob")
    assert pool.available_bits == 2 * KEY_BITS - 33 * 256
    assert pool.available_keys == 0  # what is left of the second key is shorter than 8192 bits
    assert [k.key_id for k in await reserve(store, "bob", "alice", "bob", 1, 512, 1.0)]


async def test_the_slave_reads_each_key_once_and_the_material_is_erased(store, tmp_path) -> None:
    await register(store, "bob")
    keys = await reserve(store, "bob", "alice", "bob", 2, KEY_BITS, 1.0)
    ids = [k.key_id for k in keys]
    assert await take_for_slave(store, "bob", "alice", ids, 2.0) == keys
    with pytest.raises(KeysNotFound):
        await take_for_slave(store, "bob", "alice", ids, 3.0)
    await store.checkpoint()
    raw = (tmp_path / "keys.db").read_bytes()
    assert all(k.material not in raw for k in keys)


async def test_a_failed_slave_read_consumes_nothing(store) -> None:
    await register(store, "bob")
    keys = await reserve(store, "bob", "alice", "bob", 2, KEY_BITS, 1.0)
    ids = [k.key_id for k in keys]
    with pytest.raises(Unauthorized):
        await take_for_slave(store, "eve", "alice", ids, 2.0)
    with pytest.raises(KeysNotFound):
        await take_for_slave(store, "bob", "alice", [ids[0], "qk_bob_999999"], 2.0)
    with pytest.raises(KeysNotFound):
        await take_for_slave(store, "bob", "carol", ids, 2.0)  # wrong master
    with pytest.raises(KeysNotFound):
        await take_for_slave(store, "bob", "alice", ["qk_bob_000010"], 2.0)  # never delivered
    assert await take_for_slave(store, "bob", "alice", ids, 3.0) == keys


async def test_key_ids_are_never_reused_after_a_user_is_deleted(store) -> None:
    await register(store, "bob", keys=3)
    first = await reserve(store, "bob", "alice", "bob", 1, KEY_BITS, 1.0)
    assert await store.run(pools.delete_user("bob")) == 3
    await register(store, "bob", keys=3)
    again = await reserve(store, "bob", "alice", "bob", 1, KEY_BITS, 1.0)
    assert first[0].key_id == "qk_bob_000001" and again[0].key_id == "qk_bob_000004"


async def test_two_connections_racing_for_one_pool_never_share_a_key(tmp_path) -> None:
    stores = [await KeyStore.open(tmp_path / "shared.db") for _ in range(3)]
    try:
        await register(stores[0], "bob", keys=1500)

        async def drain(store: KeyStore) -> list[str]:
            taken: list[str] = []
            while True:
                try:
                    taken += [k.key_id for k in await reserve(store, "bob", "a", "bob", 3, KEY_BITS, 1.0)]
                except InsufficientKeys:
                    return taken

        results = await asyncio.gather(*(drain(s) for s in stores))
        every = [key_id for taken in results for key_id in taken]
        assert len(every) == len(set(every)) == 1500
        assert sum(1 for taken in results if taken) >= 2  # they really raced
    finally:
        for store in stores:
            await store.close()


async def test_counts_always_equal_the_rows(store, tmp_path) -> None:
    await register(store, "bob", keys=10)
    await reserve(store, "bob", "alice", "bob", 3, KEY_BITS, 1.0)
    await reserve(store, "bob", "alice", "bob", 5, 1024, 1.0)
    pool = await pool_status(store, "bob")
    await store.close()  # the simulator's inline store holds its file locked while open
    with sqlite3.connect(tmp_path / "keys.db") as raw:
        bits = raw.execute("SELECT SUM(size_bits) FROM quantum_keys WHERE status = 0").fetchone()[0]
        used = raw.execute("SELECT COUNT(*) FROM quantum_keys WHERE status > 0").fetchone()[0]
    assert (pool.available_bits, pool.used_keys) == (bits, used) == (7 * KEY_BITS - 5 * 1024, 8)


async def test_pool_counters_match_a_recount_after_every_kind_of_change(store) -> None:
    await register(store, "bob", keys=6)
    await register(store, "carol", keys=4)
    steps = [
        reserve(store, "bob", "alice", "bob", 2, KEY_BITS, 1.0),
        reserve(store, "bob", "alice", "bob", 40, 256, 1.0),
        reserve(store, "bob", "alice", "bob", 1, KEY_BITS, 1.0),
        store.run(pools.add_keys("bob", [os.urandom(1024) for _ in range(3)], 2.0)),
        reserve(store, "carol", "alice", "carol", 3, 4096, 1.0),
        store.run(pools.delete_user("carol")),
    ]
    for step in steps:
        await step
        assert (await store_audit(store))["counter_mismatches"] == 0


async def test_a_key_longer_than_the_pool_joins_stored_keys_and_reads_back_once(store) -> None:
    materials = await register(store, "bob", keys=6)
    [key] = await reserve(store, "bob", "alice", "bob", 1, 2 * KEY_BITS, 1.0)
    assert key.material == materials[0] + materials[1]
    assert key.key_id == "qk_bob_000001~qk_bob_000002~16384"
    assert (await store_audit(store))["counter_mismatches"] == 0
    assert await take_for_slave(store, "bob", "alice", [key.key_id], 2.0) == [key]
    with pytest.raises(KeysNotFound):
        await take_for_slave(store, "bob", "alice", ["qk_bob_000001"], 3.0)


async def test_a_slice_serves_other_sizes_that_the_home_store_reproduces(tmp_path) -> None:
    home, remote = (await KeyStore.open(tmp_path / "home.db"),
                    await KeyStore.open(tmp_path / "remote.db"))
    try:
        await register(home, "bob", keys=10)
        await remote.run(pools.add_remote("bob", None, "LKM_B", 10, 1, KEY_BITS, 0.0))
        shipped = await home.run(shipping.ship("bob", "LKM_A", 6, 1.0))
        await remote.run(shipping.store_slice("bob", shipped, 1.0))
        short = await reserve(remote, "bob", "alice", "bob", 2, 128, 2.0)
        [long] = await reserve(remote, "bob", "alice", "bob", 1, 2 * KEY_BITS, 2.0)
        assert [len(k.material) for k in short] == [16, 16] and len(long.material) == 2048
        ids = [k.key_id for k in (*short, long)]
        read = await take_for_slave(home, "bob", "alice", ids, 3.0, master_home="LKM_A")
        assert read == [*short, long]
        with pytest.raises(KeysNotFound):
            await take_for_slave(home, "bob", "alice", ids[:1], 4.0, master_home="LKM_A")
        with pytest.raises(KeysNotFound):  # another LKM's master cannot claim them
            await take_for_slave(home, "bob", "carol", ids[2:], 4.0, master_home="LKM_C")
        for store in (home, remote):
            assert (await store_audit(store))["counter_mismatches"] == 0
        # read at home: the four keys the slice served; still shipped: the two it holds
        assert await home.read(audit.shipped_to) == {
            "LKM_A": ["qk_bob_000005", "qk_bob_000006"]}
    finally:
        await home.close()
        await remote.close()


async def test_many_runs_requests_in_order_and_undoes_only_the_refused_ones(store) -> None:
    await register(store, "bob", keys=5)
    first, refused, last, read, missing = await store.many([
        delivery.reservation("bob", "alice", "bob", 2, KEY_BITS, 1.0),
        delivery.reservation("bob", "alice", "bob", 100, 256, 1.0),  # carves 3 rows, then 503
        delivery.reservation("bob", "alice", "bob", 2, KEY_BITS, 1.0),
        delivery.slave_read("bob", "alice", ["qk_bob_000001"], 2.0),
        pools.status("nobody")])
    assert [k.key_id for k in first[0]] == ["qk_bob_000001", "qk_bob_000002"]
    assert isinstance(refused, InsufficientKeys)
    assert [k.key_id for k in last[0]] == ["qk_bob_000003", "qk_bob_000004"]
    assert last[1] == await pool_status(store, "bob") and last[1].available_keys == 1
    assert [k.key_id for k in read] == ["qk_bob_000001"] and missing is None
    assert (await store_audit(store))["counter_mismatches"] == 0


async def test_many_refuses_in_order_no_pool_then_own_pool_then_too_few_keys(store) -> None:
    await register(store, "bob", keys=2)
    outcomes = await store.many([
        delivery.reservation("nobody", "bob", "nobody", 9, KEY_BITS, 1.0),
        delivery.reservation("bob", "bob", "bob", 9, KEY_BITS, 1.0),
        delivery.reservation("bob", "alice", "bob", 3, KEY_BITS, 1.0),
        delivery.slave_read("bob", "alice", ["qk_bob_000001"], 2.0)])
    assert [type(o) for o in outcomes] == [NotFound, BadRequest, InsufficientKeys, KeysNotFound]
    assert (await pool_status(store, "bob")).available_keys == 2


async def test_an_unexpected_error_in_many_rolls_the_whole_transaction_back(store) -> None:
    await register(store, "bob", keys=5)

    def broken(db: sqlite3.Connection) -> None:
        db.execute("SELECT no_such_column FROM users")

    with pytest.raises(sqlite3.OperationalError):
        await store.many([delivery.reservation("bob", "alice", "bob", 2, KEY_BITS, 1.0), broken])
    assert (await pool_status(store, "bob")).available_keys == 5


async def test_every_key_state_in_the_store_is_named_by_the_enum() -> None:
    """The SQL of the store writes states as KeyState values, never as bare numbers."""
    import re
    from pathlib import Path
    store_dir = Path(__file__).resolve().parent.parent / "nodes" / "keynode" / "store"
    literal = re.compile(r"status\s*(=|!=|IN\s*\(|>|<)\s*\d|status = \d|, \d, \?")
    for module in sorted(store_dir.glob("*.py")):
        for number, line in enumerate(module.read_text().splitlines(), start=1):
            assert not literal.search(line), f"{module.name}:{number}: {line.strip()}"
    assert [state.value for state in KeyState] == [0, 1, 2, 3]


async def test_the_private_aiosqlite_names_the_store_relies_on_still_exist(tmp_path) -> None:
    """aiosqlite has no public call that runs a function on its thread, so the store uses
    Connection._conn and Connection._execute (nodes/keynode/store/connection.py); this pins
    them, so an aiosqlite release that drops either fails here and not in a served node."""
    import aiosqlite

    db = await aiosqlite.connect(str(tmp_path / "pin.db"))
    try:
        assert isinstance(db._conn, sqlite3.Connection)
        assert await db._execute(lambda conn: conn.execute("SELECT 41 + 1").fetchone()[0],
                                 db._conn) == 42
    finally:
        await db.close()


async def test_a_simulations_stores_share_a_page_cache_budget(tmp_path: Path) -> None:
    """Decision 65: 512 KiB each up to 128 stores, 64 MiB shared beyond, never under 128 KiB;
    SQLite is asked for it (a served store keeps SQLite's own default)."""
    from nodes.keynode.store import simulated_cache_kib

    assert [simulated_cache_kib(n) for n in (1, 10, 128, 256, 512, 1000)] == \
        [512, 512, 512, 256, 128, 128]
    for cache_kib, inline in ((128, True), (None, True), (128, False)):
        store = await KeyStore.open(tmp_path / f"{cache_kib}{inline}.db", inline=inline,
                                    cache_kib=cache_kib)
        try:
            size = await store.read(lambda db: db.execute("PRAGMA cache_size").fetchone()[0])
        finally:
            await store.close()
        assert size == (-(cache_kib or 512) if inline else -2000)
