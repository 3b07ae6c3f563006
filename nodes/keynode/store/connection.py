"""One LKM's SQLite file, reached either on aiosqlite's thread or inline on the event loop.

Every operation is a *transaction function* (a ``Txn``: a plain function of a
``sqlite3.Connection``) built by the concept modules (:mod:`.pools`, :mod:`.delivery`,
:mod:`.shipping`, :mod:`.synclog`, :mod:`.audit`), and :class:`KeyStore` runs it in one hop:
:meth:`KeyStore.run` inside ``BEGIN IMMEDIATE`` (all or nothing), :meth:`KeyStore.read` as a plain
read, :meth:`KeyStore.many` several requests in one transaction with a savepoint each. With a
master key the connection carries the sealer of the key material (:mod:`.sealing`).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar, cast

import aiosqlite

from nodes.keynode.config import ConfigError
from nodes.keynode.errors import QKDError
from nodes.keynode.store.schema import (
    CACHE_MAX_KIB,
    SERVED_PRAGMAS,
    SIMULATED_PRAGMAS,
    prepare,
)
from nodes.keynode.store.sealing import SealedConnection

T = TypeVar("T")
OPEN_ATTEMPTS = 5
Txn = Callable[[sqlite3.Connection], T]


class _NoSqlParameters(logging.Filter):
    """aiosqlite logs every call with its SQL parameters at DEBUG, key material included."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.DEBUG


logging.getLogger("aiosqlite").addFilter(_NoSqlParameters())


def in_transaction(db: sqlite3.Connection, txn: Txn[T]) -> T:
    db.execute("BEGIN IMMEDIATE")
    try:
        result = txn(db)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return result


def each_in_savepoint(txns: Sequence[Txn[Any]], db: sqlite3.Connection) -> list[Any]:
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
        self._conn = db if isinstance(db, sqlite3.Connection) else _raw_connection(db)
        self.path = path

    @classmethod
    async def open(cls, path: str | Path, inline: bool = False,
                   master_key: bytes | None = None, cache_kib: int | None = None) -> "KeyStore":
        """Open (or create) the file; with ``master_key`` its key material is sealed at rest
        (:mod:`.sealing`). A file sealed under another key or none is refused (ConfigError).
        ``inline`` (a simulation's store) pages through ``cache_kib`` of cache
        (:func:`~.schema.simulated_cache_kib`)."""
        factory = sqlite3.Connection if master_key is None else SealedConnection
        if inline:
            db: Any = sqlite3.connect(str(path), isolation_level=None, factory=factory)
        else:
            db = await aiosqlite.connect(str(path), isolation_level=None, factory=factory)
        store = cls(db, str(path))
        try:
            pragmas = (*SIMULATED_PRAGMAS, f"cache_size=-{cache_kib or CACHE_MAX_KIB}") \
                if inline else SERVED_PRAGMAS
            await store._prepare(pragmas, master_key)
        except BaseException as error:
            # closed whatever went wrong: an open aiosqlite connection is a thread that keeps
            # the process from exiting
            await store.close()
            if isinstance(error, ConfigError):
                raise ConfigError(f"USER_KEY_POOL_DB {str(path)!r}: {error}") from None
            raise
        return store

    async def _prepare(self, pragmas: tuple[str, ...], master_key: bytes | None) -> None:
        """:func:`prepare`, tried again a few times when the file is locked: two connections
        opening one fresh file at once (switching it to WAL, making its tables) can meet a lock
        SQLite reports at once, without waiting out the busy timeout, to avoid a deadlock.
        Every step of ``prepare`` can be done twice."""
        for attempt in range(1, OPEN_ATTEMPTS + 1):
            try:
                await self._call(prepare, pragmas, master_key)
                return
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) or attempt == OPEN_ATTEMPTS:
                    raise
            await asyncio.sleep(0.02 * attempt)

    async def close(self) -> None:
        """Close the file (a second call does nothing)."""
        if isinstance(self._db, aiosqlite.Connection):
            await self._db.close()
        else:
            self._conn.close()

    async def run(self, txn: Txn[T]) -> T:
        """Run a whole transaction in one call: the hop to aiosqlite's thread, not SQLite, is
        what a served request pays for, so each operation pays it once."""
        return await self._call(in_transaction, txn)

    async def read(self, txn: Txn[T]) -> T:
        """Run a read outside any explicit transaction."""
        return await self._call(txn)

    async def many(self, txns: Sequence[Txn[Any]]) -> list[Any]:
        """Several requests' transactions in one hop and one transaction, in order, each all or
        nothing on its own: a request's :class:`QKDError` is returned as its result, the others
        still commit."""
        return await self._call(in_transaction, lambda db: each_in_savepoint(txns, db))

    async def checkpoint(self) -> None:
        """Write the WAL back into the database file and truncate it."""
        await self._call(lambda db: db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall())

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(connection, *args)`` where this store runs SQL (see the class docstring)."""
        if self._inline:
            return fn(self._conn, *args)
        return await _on_thread(self._db, fn, self._conn, *args)  # type: ignore[arg-type]


# aiosqlite has no public way to run a function on its connection's thread (its methods each
# run one statement: a transaction would cost a thread hop per statement, the single largest
# cost of a served request); tests/test_keystore.py pins these two private names.
def _raw_connection(db: aiosqlite.Connection) -> sqlite3.Connection:
    return db._conn


async def _on_thread(db: aiosqlite.Connection, fn: Callable[..., T], *args: Any) -> T:
    return cast(T, await db._execute(fn, *args))  # type: ignore[no-untyped-call]
