"""SQLite store of an LKM: users, their per-user key pools, deliveries and sync logs.

The only SQL in qkdsim. One file per LKM, WAL journal, ``secure_delete`` so erased key material is
overwritten on disk. A pool is a set of key rows (the seed's 1 KB keys, ``qk_{SAE}_{seq:06d}``);
its counts (available keys and bits, keys used) are kept in ``key_pools`` and changed in the same
transaction as the rows they count, so they cannot drift; :meth:`KeyStore.audit` recounts them.

Key states: 0 available -> 1 delivered (to the master, who took it from the receiver's pool) ->
2 consumed (read once by the slave; material erased). Reservations and slave reads run inside
``BEGIN IMMEDIATE`` and change rows only ``WHERE status = <expected>``, so a key is never handed
out twice, even by two connections or two processes sharing the file; any failed check rolls the
whole request back (all-or-nothing).

A pool is accounted in bits: a request for keys shorter than the pool's key size carves them from
the front of the oldest available rows (the remainder stays available under the row's own ID);
each delivered key comes from one row, so ``available_keys`` counts whole default-size keys
deliverable and ``available_bits`` the material left.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import aiosqlite

from nodes.keynode.errors import (AlreadyRegistered, BadRequest, InsufficientKeys, KeysNotFound,
                          NotFound, QKDError, Unauthorized)

AVAILABLE, DELIVERED, CONSUMED, SHIPPED = 0, 1, 2, 3


class _NoSqlParameters(logging.Filter):
    """aiosqlite logs every call with its SQL parameters at DEBUG, key material included."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.DEBUG


logging.getLogger("aiosqlite").addFilter(_NoSqlParameters())

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    sae_id TEXT PRIMARY KEY,
    user_email TEXT UNIQUE,
    display_name TEXT,
    registered_at REAL NOT NULL,
    is_active INTEGER NOT NULL DEFAULT 1,
    last_activity REAL,
    home_lkm TEXT
);
CREATE TABLE IF NOT EXISTS key_pools (
    sae_id TEXT PRIMARY KEY REFERENCES users(sae_id) ON DELETE CASCADE,
    pool_size_limit INTEGER NOT NULL,
    low_threshold INTEGER NOT NULL,
    key_size_bits INTEGER NOT NULL,
    last_sync_time REAL,
    available_keys INTEGER NOT NULL DEFAULT 0,
    available_bits INTEGER NOT NULL DEFAULT 0,
    used_keys INTEGER NOT NULL DEFAULT 0,
    home_lkm TEXT
);
CREATE TABLE IF NOT EXISTS key_sequences (
    sae_id TEXT PRIMARY KEY,
    next_seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS quantum_keys (
    id INTEGER PRIMARY KEY,
    key_id TEXT NOT NULL UNIQUE,
    sae_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    key_data BLOB,
    size_bits INTEGER NOT NULL,
    status INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    delivered_to_sae_id TEXT,
    slave_sae_id TEXT,
    delivered_at REAL,
    consumed_at REAL,
    shipped_to TEXT
);
CREATE INDEX IF NOT EXISTS quantum_keys_available ON quantum_keys(sae_id, seq) WHERE status = 0;
CREATE INDEX IF NOT EXISTS quantum_keys_owner ON quantum_keys(sae_id, status);
CREATE TABLE IF NOT EXISTS sync_logs (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    reason TEXT NOT NULL,
    sae_id TEXT,
    keys_requested INTEGER NOT NULL,
    keys_received INTEGER NOT NULL,
    duration_s REAL NOT NULL,
    outcome TEXT NOT NULL
);
"""

POOL_STATUS = """
SELECT u.sae_id, u.user_email, u.display_name, u.registered_at, p.pool_size_limit, p.low_threshold,
       p.key_size_bits, p.last_sync_time, p.available_keys, p.available_bits, p.used_keys,
       p.home_lkm
  FROM users u JOIN key_pools p ON p.sae_id = u.sae_id
"""

COUNTS_FROM_ROWS = """
SELECT p.sae_id, p.available_keys, p.available_bits, p.used_keys,
       COALESCE(SUM(CASE WHEN k.status = 0 THEN k.size_bits / p.key_size_bits END), 0),
       COALESCE(SUM(CASE WHEN k.status = 0 THEN k.size_bits END), 0),
       COALESCE(SUM(k.status > 0), 0)
  FROM key_pools p LEFT JOIN quantum_keys k ON k.sae_id = p.sae_id
 GROUP BY p.sae_id
"""

RESERVE_WHOLE = """
UPDATE quantum_keys SET status = 1, delivered_to_sae_id = :master, slave_sae_id = :slave,
       delivered_at = :now
 WHERE id IN (SELECT id FROM quantum_keys
               WHERE sae_id = :owner AND status = 0 AND size_bits = :size
               ORDER BY seq LIMIT :n)
RETURNING seq, key_id, key_data
"""


@dataclass(frozen=True, slots=True)
class Key:
    key_id: str
    material: bytes

    def __repr__(self) -> str:  # never print key material
        return f"Key({self.key_id!r}, <{len(self.material)} bytes>)"


@dataclass(frozen=True, slots=True)
class PoolStatus:
    sae_id: str
    user_email: str | None
    display_name: str | None
    registered_at: float
    pool_size_limit: int
    low_threshold: int
    key_size_bits: int
    last_sync_time: float | None
    available_keys: int
    available_bits: int
    used_keys: int
    home_lkm: str | None = None

    @property
    def is_slice(self) -> bool:
        return self.home_lkm is not None

    @property
    def total_keys(self) -> int:
        return self.available_keys + self.used_keys


@dataclass(frozen=True, slots=True)
class SyncStats:
    total: int
    successful: int
    failed: int
    keys_received: int


def key_id_for(sae_id: str, seq: int) -> str:
    return f"qk_{sae_id}_{seq:06d}"


COMPOSITE_SEPARATOR = "~"


def composite_parts(size_bits: int, pool_bits: int) -> int:
    """Stored keys per key of ``size_bits`` from a slice of ``pool_bits`` keys (400 if none)."""
    if size_bits < pool_bits or size_bits % pool_bits == 0:
        return max(1, size_bits // pool_bits)
    raise BadRequest(f"keys for an SAE homed at another KME are whole multiples of {pool_bits} "
                     f"bits, or shorter than {pool_bits}", size=size_bits)


def composite_key(parts: Sequence[Key], size_bits: int) -> Key:
    """``id1~id2~...~bits``: the parts' bytes joined, cut to ``size_bits``."""
    key_id = COMPOSITE_SEPARATOR.join([*(p.key_id for p in parts), str(size_bits)])
    return Key(key_id, join_parts([p.material for p in parts], size_bits))


def split_composite(key_id: str) -> tuple[tuple[str, ...], int | None]:
    """The parts and size of a composite key ID (a plain ID is its own single part)."""
    *parts, bits = key_id.split(COMPOSITE_SEPARATOR)
    if not parts or not bits.isdigit():
        return (key_id,), None
    return tuple(parts), int(bits)


def join_parts(materials: Sequence[bytes], size_bits: int | None) -> bytes:
    joined = b"".join(materials)
    return joined if size_bits is None else joined[:size_bits // 8]


T = TypeVar("T")
Txn = Callable[[sqlite3.Connection], T]


def _fetchall(db: sqlite3.Connection, sql: str, parameters: Any = ()) -> list[Any]:
    return db.execute(sql, parameters).fetchall()


def _prepare(db: sqlite3.Connection, *simulated: str) -> None:
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=5000",
                   "secure_delete=ON", "foreign_keys=ON", *simulated):
        db.execute(f"PRAGMA {pragma}")
    db.executescript(SCHEMA)


def _in_transaction(db: sqlite3.Connection, txn: Callable[[sqlite3.Connection], T]) -> T:
    db.execute("BEGIN IMMEDIATE")
    try:
        result = txn(db)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return result


def _each_in_savepoint(txns: Sequence[Txn[Any]], db: sqlite3.Connection) -> list[Any]:
    """Run each request in a savepoint of the caller's transaction: a request that raises a
    :class:`QKDError` is undone alone and the error is its result; any other error propagates
    (and the caller's transaction rolls everything back)."""
    results: list[Any] = []
    for txn in txns:
        db.execute("SAVEPOINT request")
        try:
            results.append(txn(db))
        except QKDError as error:
            db.execute("ROLLBACK TO request")
            results.append(error)
        db.execute("RELEASE request")
    return results


class KeyStore:
    """Async access to one LKM's SQLite file. Open with :meth:`open`, close with :meth:`close`.

    Two ways to reach SQLite, one set of SQL: a served node hands each transaction to
    aiosqlite's thread (one hop per operation), so the event loop keeps serving while SQLite
    works; ``inline=True`` (the simulator under its virtual clock, where nothing else may run
    meanwhile anyway) calls SQLite on the loop's own thread, which saves the hop and the wake-up
    of the loop that dominate a simulated request.
    """

    def __init__(self, db: aiosqlite.Connection | sqlite3.Connection, path: str) -> None:
        self._db = db
        self._inline = isinstance(db, sqlite3.Connection)
        self._conn: sqlite3.Connection = db if isinstance(db, sqlite3.Connection) else db._conn
        self.path = path

    @classmethod
    async def open(cls, path: str | Path, inline: bool = False) -> "KeyStore":
        if inline:
            db: Any = sqlite3.connect(str(path), isolation_level=None)
            # A simulation's files are its own: one connection each, and a simulated crash
            # stops the actor, not the process, so every committed transaction survives it
            # without an fsync or an on-disk journal; the file is locked while the run holds it
            # open (readable afterwards). A simulation may hold a thousand stores open: 512 KiB
            # of page cache each, not SQLite's 2 MB. Served nodes (below) keep WAL and NORMAL.
            _prepare(db, "journal_mode=MEMORY", "locking_mode=EXCLUSIVE", "synchronous=OFF",
                     "cache_size=-512")
        else:
            db = await aiosqlite.connect(str(path), isolation_level=None)
            await db._execute(_prepare, db._conn)
        return cls(db, str(path))

    async def close(self) -> None:
        """Close the file (a second call does nothing)."""
        if self._inline:
            self._conn.close()
        else:
            await self._db.close()  # type: ignore[union-attr]

    async def checkpoint(self) -> None:
        """Write the WAL back into the database file and truncate it."""
        await self._rows("PRAGMA wal_checkpoint(TRUNCATE)")

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(connection, *args)`` where this store runs SQL (see the class docstring)."""
        if self._inline:
            return fn(self._conn, *args)
        return await self._db._execute(fn, self._conn, *args)  # type: ignore[union-attr]

    async def _atomic(self, txn: Callable[[sqlite3.Connection], T]) -> T:
        """Run a whole transaction in one call: the hop to aiosqlite's thread, not SQLite, is
        what a served request pays for, so each operation pays it once."""
        return await self._call(_in_transaction, txn)

    async def _rows(self, sql: str, parameters: Any = ()) -> list[Any]:
        return await self._call(_fetchall, sql, parameters)

    async def many(self, txns: Sequence[Txn[Any]]) -> list[Any]:
        """Several requests' transactions (:meth:`reservation`, :meth:`slave_read`,
        :meth:`pool_read`) in one hop and one transaction, in order, each all-or-nothing on its
        own: a request's :class:`QKDError` is returned as its result, the others still commit."""
        return await self._call(_in_transaction, lambda db: _each_in_savepoint(txns, db))

    # -- users and pools -------------------------------------------------------------------

    async def register(self, sae_id: str, user_email: str | None, display_name: str | None,
                       pool_size_limit: int, low_threshold: int, key_size_bits: int,
                       materials: Sequence[bytes], now: float) -> None:
        def txn(db: sqlite3.Connection) -> Any:
            rows = _fetchall(db,
                "SELECT sae_id, user_email FROM users WHERE sae_id = ? OR user_email = ?",
                (sae_id, user_email))
            for row in rows:
                field = "sae_id" if row[0] == sae_id else "user_email"
                raise AlreadyRegistered(f"User already registered ({field} exists)", field=field)
            db.execute("INSERT INTO users(sae_id, user_email, display_name, registered_at,"
                             " last_activity) VALUES (?, ?, ?, ?, ?)",
                             (sae_id, user_email, display_name, now, now))
            db.execute("INSERT INTO key_pools(sae_id, pool_size_limit, low_threshold,"
                             " key_size_bits) VALUES (?, ?, ?, ?)",
                             (sae_id, pool_size_limit, low_threshold, key_size_bits))
            self._insert_available(db, sae_id, materials, key_size_bits, now)

        return await self._atomic(txn)
    async def exists(self, sae_id: str) -> bool:
        """Is ``sae_id`` a user at home here (remote users only have slices here)?"""
        rows = await self._rows(
            "SELECT 1 FROM users WHERE sae_id = ? AND home_lkm IS NULL", (sae_id,))
        return bool(rows)

    async def add_remote(self, sae_id: str, user_email: str | None, home_lkm: str,
                         slice_limit: int, low_threshold: int, key_size_bits: int,
                         now: float) -> None:
        """Know a user homed at ``home_lkm`` and give it an (empty) slice here; idempotent."""
        def txn(db: sqlite3.Connection) -> Any:
            db.execute("INSERT OR IGNORE INTO users(sae_id, user_email, display_name,"
                             " registered_at, home_lkm) VALUES (?, ?, ?, ?, ?)",
                             (sae_id, None, user_email, now, home_lkm))
            db.execute("INSERT OR IGNORE INTO key_pools(sae_id, pool_size_limit,"
                             " low_threshold, key_size_bits, home_lkm) VALUES (?, ?, ?, ?, ?)",
                             (sae_id, slice_limit, low_threshold, key_size_bits, home_lkm))

        return await self._atomic(txn)
    async def pool_status(self, sae_id: str) -> PoolStatus | None:
        return await self._call(self.pool_read(sae_id))

    @staticmethod
    def pool_read(sae_id: str) -> Txn[PoolStatus | None]:
        """The pool-status query as a request for :meth:`many`."""
        def txn(db: sqlite3.Connection) -> PoolStatus | None:
            rows = _fetchall(db, POOL_STATUS + " WHERE u.sae_id = ?", (sae_id,))
            return PoolStatus(*rows[0]) if rows else None
        return txn

    async def all_pools(self) -> list[PoolStatus]:
        rows = await self._rows(
            POOL_STATUS + " WHERE u.is_active = 1 ORDER BY u.sae_id")
        return [PoolStatus(*row) for row in rows]

    async def add_keys(self, sae_id: str, materials: Sequence[bytes], now: float) -> int:
        """Append fresh key material to a pool; returns the number of keys added."""
        def txn(db: sqlite3.Connection) -> Any:
            rows = _fetchall(db,
                "SELECT key_size_bits FROM key_pools WHERE sae_id = ?", (sae_id,))
            if not rows:
                return 0
            self._insert_available(db, sae_id, materials, rows[0][0], now)
            return len(materials)
        return await self._atomic(txn)

    async def delete_user(self, sae_id: str) -> int:
        """Remove a user, its pool and every key row (material overwritten on disk)."""
        def txn(db: sqlite3.Connection) -> Any:
            cursor = db.execute("DELETE FROM quantum_keys WHERE sae_id = ?", (sae_id,))
            deleted = cursor.rowcount
            db.execute("DELETE FROM key_pools WHERE sae_id = ?", (sae_id,))
            db.execute("DELETE FROM users WHERE sae_id = ?", (sae_id,))
            return deleted
        return await self._atomic(txn)

    def _insert_available(self, db: sqlite3.Connection, sae_id: str,
                                materials: Sequence[bytes], size_bits: int, now: float) -> None:
        first = self._take_seqs(db, sae_id, len(materials))
        db.executemany(
            "INSERT INTO quantum_keys(key_id, sae_id, seq, key_data, size_bits, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [(key_id_for(sae_id, first + i), sae_id, first + i, material, size_bits, now)
             for i, material in enumerate(materials)])
        self._count(db, sae_id, len(materials), len(materials) * size_bits, 0)

    def _count(self, db: sqlite3.Connection, sae_id: str, keys: int, bits: int,
                     used: int) -> None:
        """Move a pool's counters by the given deltas (inside the caller's transaction)."""
        db.execute(
            "UPDATE key_pools SET available_keys = available_keys + ?,"
            " available_bits = available_bits + ?, used_keys = used_keys + ? WHERE sae_id = ?",
            (keys, bits, used, sae_id))

    def _take_seqs(self, db: sqlite3.Connection, sae_id: str, count: int) -> int:
        """Reserve ``count`` sequence numbers; IDs are never reused, not even after a delete."""
        rows = _fetchall(db,
            "INSERT INTO key_sequences(sae_id, next_seq) VALUES (?, ? + 1)"
            " ON CONFLICT(sae_id) DO UPDATE SET next_seq = next_seq + ?"
            " RETURNING next_seq", (sae_id, count, count))
        return int(rows[0][0]) - count

    # -- delivery ------------------------------------------------------------------------

    async def reserve(self, owner: str, master: str, slave: str, number: int, size_bits: int,
                      now: float) -> list[Key]:
        """Take ``number`` keys of ``size_bits`` from ``owner``'s pool for ``master``; all or none."""
        keys, _ = await self.reserve_with_status(owner, master, slave, number, size_bits, now)
        return keys

    async def local_users(self) -> set[str]:
        rows = await self._rows("SELECT sae_id FROM users WHERE home_lkm IS NULL")
        return {row[0] for row in rows}

    async def reserve_with_status(self, owner: str, master: str, slave: str, number: int,
                                  size_bits: int, now: float) -> tuple[list[Key], PoolStatus]:
        """:meth:`reserve`, and the pool's status after it, in the same single hop."""
        return await self._atomic(self.reservation(owner, master, slave, number, size_bits, now))

    def reservation(self, owner: str, master: str, slave: str, number: int, size_bits: int,
                    now: float) -> Txn[tuple[list[Key], PoolStatus]]:
        """The transaction of :meth:`reserve_with_status`, for :meth:`many`. Refuses, in this
        order: no pool for ``owner`` (404), ``owner`` as its own master (400), too few keys
        (503)."""
        def txn(db: sqlite3.Connection) -> tuple[list[Key], PoolStatus]:
            rows = _fetchall(db, POOL_STATUS + " WHERE u.sae_id = ?", (owner,))
            if not rows:
                raise NotFound(f"SAE '{owner}' is not registered at this KME", sae_id=owner)
            if master == owner:
                raise BadRequest("slave_SAE_ID must differ from the caller's SAE ID")
            before = PoolStatus(*rows[0])
            pool_bits, home_lkm = before.key_size_bits, before.home_lkm
            removed_bits, used_rows = number * size_bits, number
            if size_bits > pool_bits or (home_lkm is not None and size_bits != pool_bits):
                keys = self._reserve_composite(db, owner, master, slave, number, size_bits,
                                               pool_bits, now, erase=home_lkm is not None)
                freed_keys = used_rows = len(keys) and composite_parts(size_bits, pool_bits) * number
                removed_bits = freed_keys * pool_bits
            elif pool_bits == size_bits:
                keys = self._reserve_whole(db, owner, master, slave, number, size_bits, now)
                freed_keys = len(keys)
                if home_lkm is not None:  # the master's copy is all this KME ever hands out
                    self._erase_delivered(db, [k.key_id for k in keys])
            else:
                keys, freed_keys = self._reserve_carved(db, owner, master, slave, number,
                                                        size_bits, pool_bits, now)
            if len(keys) < number:
                raise InsufficientKeys(requested_keys=number, size_bits=size_bits)
            self._count(db, owner, -freed_keys, -removed_bits, used_rows)
            db.execute("UPDATE users SET last_activity = ? WHERE sae_id IN (?, ?)",
                       (now, owner, master))
            # the counters moved by exactly what _count added, in this transaction
            return keys, replace(before, available_keys=before.available_keys - freed_keys,
                                 available_bits=before.available_bits - removed_bits,
                                 used_keys=before.used_keys + used_rows)
        return txn

    def _reserve_composite(self, db: sqlite3.Connection, owner: str, master: str,
                                 slave: str, number: int, size_bits: int, pool_bits: int,
                                 now: float, erase: bool) -> list[Key]:
        """Keys of another size made of whole stored keys: a longer key joins consecutive keys,
        and from a slice a shorter one is the front of one key (the rest is spent with it), so
        that the home LKM can give the receiver the same bytes. The ID names its parts."""
        per_key = composite_parts(size_bits, pool_bits)
        parts = self._reserve_whole(db, owner, master, slave, number * per_key, pool_bits,
                                          now)
        if len(parts) < number * per_key:
            return []
        if erase:  # a slice: the master's copy is all this KME ever hands out
            self._erase_delivered(db, [part.key_id for part in parts])
        return [composite_key(parts[i * per_key:(i + 1) * per_key], size_bits)
                for i in range(number)]

    def _erase_delivered(self, db: sqlite3.Connection, key_ids: Sequence[str]) -> None:
        db.execute("UPDATE quantum_keys SET key_data = NULL WHERE status = 1 AND key_id IN"
                         f" ({','.join('?' * len(key_ids))})", list(key_ids))

    def _reserve_whole(self, db: sqlite3.Connection, owner: str, master: str,
                             slave: str, number: int, size_bits: int, now: float) -> list[Key]:
        rows = _fetchall(db, RESERVE_WHOLE, {
            "master": master, "slave": slave, "now": now, "owner": owner, "size": size_bits,
            "n": number})
        return [Key(key_id, bytes(data)) for _, key_id, data in sorted(rows)]

    def _reserve_carved(self, db: sqlite3.Connection, owner: str, master: str,
                              slave: str, number: int, size_bits: int, pool_bits: int,
                              now: float) -> tuple[list[Key], int]:
        """Carve keys shorter (or longer) than the pool's; returns them and the whole
        default-size keys their rows no longer hold."""
        rows = _fetchall(db,
            "SELECT id, key_data, size_bits FROM quantum_keys"
            " WHERE sae_id = ? AND status = 0 AND size_bits >= ? ORDER BY seq LIMIT ?",
            (owner, size_bits, number))
        key_bytes, keys, lost_whole = size_bits // 8, [], 0
        for row_id, data, row_bits in rows:
            if len(keys) == number:
                break
            take = min(number - len(keys), row_bits // size_bits)
            pieces = [bytes(data[i * key_bytes:(i + 1) * key_bytes]) for i in range(take)]
            keys += self._carve_row(db, owner, master, slave, row_id, bytes(data),
                                          row_bits, pieces, now)
            left_bits = row_bits - take * size_bits
            lost_whole += row_bits // pool_bits - left_bits // pool_bits
        return keys, lost_whole

    def _carve_row(self, db: sqlite3.Connection, owner: str, master: str, slave: str,
                         row_id: int, data: bytes, row_bits: int, pieces: list[bytes],
                         now: float) -> list[Key]:
        """Deliver ``pieces`` (cut from the front of one row) as new key rows."""
        used = sum(len(p) for p in pieces)
        first = self._take_seqs(db, owner, len(pieces))
        new = [(key_id_for(owner, first + i), owner, first + i, piece, len(piece) * 8, now,
                master, slave, now) for i, piece in enumerate(pieces)]
        db.executemany(
            "INSERT INTO quantum_keys(key_id, sae_id, seq, key_data, size_bits, created_at,"
            " status, delivered_to_sae_id, slave_sae_id, delivered_at)"
            " VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?, ?)", new)
        if used * 8 == row_bits:
            db.execute("DELETE FROM quantum_keys WHERE id = ? AND status = 0", (row_id,))
        else:
            db.execute(
                "UPDATE quantum_keys SET key_data = ?, size_bits = ? WHERE id = ? AND status = 0",
                (data[used:], row_bits - used * 8, row_id))
        return [Key(row[0], row[3]) for row in new]

    async def take_for_slave(self, caller: str, master: str, key_ids: Sequence[str],
                             now: float, master_home: str | None = None) -> list[Key]:
        """Hand keys to their slave exactly once, then erase them; all or none.

        A key qualifies when it was delivered here to ``master``, or shipped to the LKM that
        is ``master``'s home (``master_home``), whose slice served it. 401 if any of the keys
        has another slave; 400 (not found) if any is unknown, not yet delivered, already
        consumed, or belongs to another master.
        """
        return await self._atomic(self.slave_read(caller, master, key_ids, now, master_home))

    def slave_read(self, caller: str, master: str, key_ids: Sequence[str], now: float,
                   master_home: str | None = None) -> Txn[list[Key]]:
        """The transaction of :meth:`take_for_slave`, for :meth:`many`."""
        def txn(db: sqlite3.Connection) -> list[Key]:
            plain = _fetchall(db,
                f"SELECT key_id FROM quantum_keys WHERE key_id IN ({','.join('?' * len(key_ids))})",
                tuple(key_ids))
            known = {row[0] for row in plain}
            wanted = {key_id: ((key_id,), None) if key_id in known else split_composite(key_id)
                      for key_id in key_ids}
            part_ids = [part for parts, _ in wanted.values() for part in parts]
            if len(set(part_ids)) != len(part_ids):
                raise KeysNotFound()
            marks = ",".join("?" * len(part_ids))
            rows = _fetchall(db,
                "SELECT key_id, key_data, status, slave_sae_id, delivered_to_sae_id, shipped_to"
                f" FROM quantum_keys WHERE key_id IN ({marks})", tuple(part_ids))
            found = {row[0]: row for row in rows}
            if any(row[2] != AVAILABLE and row[3] != caller for row in rows):
                raise Unauthorized("caller is not a slave SAE of the requested keys")
            if len(found) != len(part_ids) or not all(
                    (row[2] == DELIVERED and row[4] == master) or
                    (row[2] == SHIPPED and master_home is not None and row[5] == master_home)
                    for row in rows):
                raise KeysNotFound()
            cursor = db.execute(
                "UPDATE quantum_keys SET status = 2, key_data = NULL, consumed_at = ?,"
                " delivered_to_sae_id = COALESCE(delivered_to_sae_id, ?)"
                f" WHERE status IN (1, 3) AND key_id IN ({marks})", (now, master, *part_ids))
            if cursor.rowcount != len(part_ids):
                raise KeysNotFound()
            return [Key(key_id, join_parts([bytes(found[p][1]) for p in parts], bits))
                    for key_id, (parts, bits) in wanted.items()]
        return txn

    async def ship(self, owner: str, to_lkm: str, count: int, now: float) -> list[Key]:
        """Reserve up to ``count`` whole keys of a home pool for a slice at ``to_lkm``.

        The keys stay here (the owner reads them here, once) in state shipped."""
        def txn(db: sqlite3.Connection) -> Any:
            pool = _fetchall(db,
                "SELECT key_size_bits FROM key_pools WHERE sae_id = ? AND home_lkm IS NULL",
                (owner,))
            if not pool or count <= 0:
                return []
            rows = _fetchall(db,
                "UPDATE quantum_keys SET status = 3, shipped_to = ?, slave_sae_id = sae_id,"
                " delivered_at = ? WHERE id IN (SELECT id FROM quantum_keys WHERE sae_id = ?"
                " AND status = 0 AND size_bits = ? ORDER BY seq LIMIT ?)"
                " RETURNING seq, key_id, key_data", (to_lkm, now, owner, pool[0][0], count))
            self._count(db, owner, -len(rows), -len(rows) * pool[0][0], len(rows))
            return [Key(key_id, bytes(data)) for _, key_id, data in sorted(rows)]
        return await self._atomic(txn)

    async def unship(self, owner: str, key_ids: Sequence[str]) -> int:
        """Return shipped keys that never reached their slice to the home pool."""
        def txn(db: sqlite3.Connection) -> Any:
            rows = _fetchall(db,
                "UPDATE quantum_keys SET status = 0, shipped_to = NULL, slave_sae_id = NULL,"
                f" delivered_at = NULL WHERE status = 3 AND sae_id = ? AND key_id IN"
                f" ({','.join('?' * len(key_ids))}) RETURNING size_bits", (owner, *key_ids))
            self._count(db, owner, len(rows), sum(r[0] for r in rows), -len(rows))
            return len(rows)
        return await self._atomic(txn)

    async def store_slice(self, owner: str, keys: Sequence[Key], now: float) -> int:
        """Add keys shipped from the owner's home LKM to the owner's slice here."""
        def txn(db: sqlite3.Connection) -> Any:
            pool = _fetchall(db,
                "SELECT key_size_bits FROM key_pools WHERE sae_id = ? AND home_lkm IS NOT NULL",
                (owner,))
            if not pool:
                return 0
            first = self._take_seqs(db, owner, len(keys))
            db.executemany(
                "INSERT INTO quantum_keys(key_id, sae_id, seq, key_data, size_bits, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [(key.key_id, owner, first + i, key.material, len(key.material) * 8, now)
                 for i, key in enumerate(keys)])
            self._count(db, owner, len(keys), sum(len(k.material) * 8 for k in keys), 0)
            return len(keys)
        return await self._atomic(txn)

    async def key_status(self, key_id: str) -> tuple[int, str, str | None] | None:
        """(status, owner, master) of a key, or None; never the material."""
        rows = await self._rows(
            "SELECT status, sae_id, delivered_to_sae_id FROM quantum_keys WHERE key_id = ?",
            (key_id,))
        return (rows[0][0], rows[0][1], rows[0][2]) if rows else None

    # -- sync log ------------------------------------------------------------------------

    async def record_sync(self, at: float, reason: str, sae_id: str | None, keys_requested: int,
                          keys_received: int, duration_s: float, outcome: str) -> None:
        def txn(db: sqlite3.Connection) -> Any:
            db.execute(
                "INSERT INTO sync_logs(at, reason, sae_id, keys_requested, keys_received,"
                " duration_s, outcome) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (at, reason, sae_id, keys_requested, keys_received, duration_s, outcome))
            if outcome == "ok" and sae_id is not None:
                db.execute("UPDATE key_pools SET last_sync_time = ? WHERE sae_id = ?",
                                 (at, sae_id))

        return await self._atomic(txn)
    async def sync_stats(self) -> SyncStats:
        rows = await self._rows(
            "SELECT COUNT(*), COALESCE(SUM(outcome = 'ok'), 0), COALESCE(SUM(outcome != 'ok'), 0),"
            " COALESCE(SUM(keys_received), 0) FROM sync_logs")
        return SyncStats(*rows[0])

    async def last_sync_time(self) -> float | None:
        rows = await self._rows("SELECT MAX(at) FROM sync_logs")
        return rows[0][0]

    async def audit(self) -> dict[str, int]:
        """Counts for invariant checks: rows by state, and key IDs or material seen twice."""
        rows = await self._rows(
            "SELECT status, COUNT(*) FROM quantum_keys GROUP BY status")
        counts = {f"status_{status}": count for status, count in rows}
        dup = await self._rows(
            "SELECT COUNT(*) FROM (SELECT key_data FROM quantum_keys WHERE key_data IS NOT NULL"
            " GROUP BY key_data HAVING COUNT(*) > 1)")
        counts["duplicate_material"] = dup[0][0]
        pools = await self._rows(COUNTS_FROM_ROWS)
        counts["counter_mismatches"] = sum(1 for row in pools if tuple(row[1:4]) != tuple(row[4:7]))
        return counts

