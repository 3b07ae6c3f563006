"""Handing keys out: to the master that takes them (enc_keys), then once to their slave
(dec_keys), all or nothing.

Reservations and slave reads change rows only ``WHERE status = <expected>`` inside the caller's
``BEGIN IMMEDIATE``, so a key is never handed out twice, even by two connections or two
processes sharing the file.

A pool is accounted in bits: a request for keys shorter than the pool's key size carves them
from the front of the oldest available rows (the remainder stays available under the row's own
ID); each delivered key comes from one row, so ``available_keys`` counts whole default-size keys
deliverable and ``available_bits`` the material left. Keys that must be reproduced at another
LKM (longer keys, and any other size from a slice) are made of whole stored keys instead.

QuMail's profile (``echo``, ``keep_copy``) lets a master read its own key back once where it took
it, instead of its slave; a read or ``mark_consumed`` reports the key's copies held at another
LKM, which :mod:`nodes.keynode.copies` has erased there.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, replace
from typing import Any, Sequence

from nodes.keynode.errors import (
    BadRequest,
    InsufficientKeys,
    KeysNotFound,
    NotFound,
    Unauthorized,
)
from nodes.keynode.store.connection import Txn
from nodes.keynode.store.keys import (
    Key,
    KeyState,
    composite_key,
    composite_parts,
    join_parts,
    key_id_for,
    split_composite,
)
from nodes.keynode.store.pools import POOL_STATUS, PoolStatus, count, take_seqs
from nodes.keynode.store.schema import fetchall, marks
from nodes.keynode.store.sealing import sealer

AVAILABLE, DELIVERED, CONSUMED, SHIPPED = (f"{state:d}" for state in KeyState)

RESERVE_WHOLE = f"""
UPDATE quantum_keys SET status = {DELIVERED}, delivered_to_sae_id = :master,
       slave_sae_id = :slave, delivered_at = :now
 WHERE id IN (SELECT id FROM quantum_keys
               WHERE sae_id = :owner AND status = {AVAILABLE} AND size_bits = :size
               ORDER BY seq LIMIT :n)
RETURNING seq, key_id, key_data
"""


def reservation(owner: str, master: str, slave: str, number: int, size_bits: int,
                now: float, keep_copy: bool = False) -> Txn[tuple[list[Key], PoolStatus]]:
    """Take ``number`` keys of ``size_bits`` from ``owner``'s pool for ``master``, all or none;
    the keys and the pool's status after. Refuses, in this order: no pool for ``owner`` (404),
    ``owner`` as its own master (400), too few keys (503). From a slice the master's copy is
    erased at once, unless ``keep_copy`` (QuMail's profile: the master may read it back once)."""
    def txn(db: sqlite3.Connection) -> tuple[list[Key], PoolStatus]:
        rows = fetchall(db, POOL_STATUS + " WHERE u.sae_id = ?", (owner,))
        if not rows:
            raise NotFound(f"SAE '{owner}' is not registered at this KME", sae_id=owner)
        if master == owner:
            raise BadRequest("slave_SAE_ID must differ from the caller's SAE ID")
        before = PoolStatus(*rows[0])
        pool_bits, home_lkm = before.key_size_bits, before.home_lkm
        removed_bits, used_rows = number * size_bits, number
        if size_bits > pool_bits or (home_lkm is not None and size_bits != pool_bits):
            keys = _reserve_composite(db, owner, master, slave, number, size_bits, pool_bits,
                                      now, erase=home_lkm is not None and not keep_copy)
            freed_keys = used_rows = len(keys) and composite_parts(size_bits, pool_bits) * number
            removed_bits = freed_keys * pool_bits
        elif pool_bits == size_bits:
            keys = _reserve_whole(db, owner, master, slave, number, size_bits, now)
            freed_keys = len(keys)
            if home_lkm is not None and not keep_copy:  # the master's copy, handed out once
                _erase_delivered(db, [k.key_id for k in keys])
        else:
            keys, freed_keys = _reserve_carved(db, owner, master, slave, number, size_bits,
                                               pool_bits, now)
        if len(keys) < number:
            raise InsufficientKeys(
                f"not enough key material available: {number} keys of {size_bits} bits asked "
                f"for, {before.available_keys} keys of {pool_bits} bits "
                f"({before.available_bits} bits) available", requested_keys=number,
                size_bits=size_bits, available_keys=before.available_keys,
                available_bits=before.available_bits)
        count(db, owner, -freed_keys, -removed_bits, used_rows)
        db.execute("UPDATE users SET last_activity = ? WHERE sae_id IN (?, ?)",
                   (now, owner, master))
        # the counters moved by exactly what count() added, in this transaction
        return keys, replace(before, available_keys=before.available_keys - freed_keys,
                             available_bits=before.available_bits - removed_bits,
                             used_keys=before.used_keys + used_rows)
    return txn


def _reserve_composite(db: sqlite3.Connection, owner: str, master: str, slave: str, number: int,
                       size_bits: int, pool_bits: int, now: float, erase: bool) -> list[Key]:
    """Keys of another size made of whole stored keys: a longer key joins consecutive keys,
    and from a slice a shorter one is the front of one key (the rest is spent with it), so
    that the home LKM can give the receiver the same bytes. The ID names its parts."""
    per_key = composite_parts(size_bits, pool_bits)
    parts = _reserve_whole(db, owner, master, slave, number * per_key, pool_bits, now)
    if len(parts) < number * per_key:
        return []
    if erase:  # a slice: the master's copy is all this KME ever hands out
        _erase_delivered(db, [part.key_id for part in parts])
    return [composite_key(parts[i * per_key:(i + 1) * per_key], size_bits)
            for i in range(number)]


def _erase_delivered(db: sqlite3.Connection, key_ids: Sequence[str]) -> None:
    db.execute(f"UPDATE quantum_keys SET key_data = NULL WHERE status = {DELIVERED}"
               f" AND key_id IN ({marks(len(key_ids))})", list(key_ids))


def _reserve_whole(db: sqlite3.Connection, owner: str, master: str, slave: str, number: int,
                   size_bits: int, now: float) -> list[Key]:
    rows = fetchall(db, RESERVE_WHOLE, {"master": master, "slave": slave, "now": now,
                                        "owner": owner, "size": size_bits, "n": number})
    unseal = sealer(db).open
    return [Key(key_id, unseal(key_id, data)) for _, key_id, data in sorted(rows)]


def _reserve_carved(db: sqlite3.Connection, owner: str, master: str, slave: str, number: int,
                    size_bits: int, pool_bits: int, now: float) -> tuple[list[Key], int]:
    """Carve keys shorter (or longer) than the pool's; returns them and the whole
    default-size keys their rows no longer hold."""
    rows = fetchall(db, f"SELECT key_id, key_data, size_bits FROM quantum_keys WHERE sae_id = ?"
                        f" AND status = {AVAILABLE} AND size_bits >= ? ORDER BY seq LIMIT ?",
                    (owner, size_bits, number))
    key_bytes, lost_whole, unseal = size_bits // 8, 0, sealer(db).open
    keys: list[Key] = []
    for row_key_id, stored, row_bits in rows:
        if len(keys) == number:
            break
        data = unseal(row_key_id, stored)
        take = min(number - len(keys), row_bits // size_bits)
        pieces = [data[i * key_bytes:(i + 1) * key_bytes] for i in range(take)]
        keys += _carve_row(db, owner, master, slave, row_key_id, data, row_bits, pieces, now)
        left_bits = row_bits - take * size_bits
        lost_whole += row_bits // pool_bits - left_bits // pool_bits
    return keys, lost_whole


def _carve_row(db: sqlite3.Connection, owner: str, master: str, slave: str, row_key_id: str,
               data: bytes, row_bits: int, pieces: list[bytes], now: float) -> list[Key]:
    """Deliver ``pieces`` (cut from the front of one row's material ``data``) as new key
    rows."""
    used, seal = sum(len(p) for p in pieces), sealer(db).seal
    first = take_seqs(db, owner, len(pieces))
    keys = [Key(key_id_for(owner, first + i), piece) for i, piece in enumerate(pieces)]
    db.executemany(
        "INSERT INTO quantum_keys(key_id, sae_id, seq, key_data, size_bits, created_at,"
        " status, delivered_to_sae_id, slave_sae_id, delivered_at)"
        f" VALUES (?, ?, ?, ?, ?, ?, {DELIVERED}, ?, ?, ?)",
        [(key.key_id, owner, first + i, seal(key.key_id, key.material),
          len(key.material) * 8, now, master, slave, now) for i, key in enumerate(keys)])
    if used * 8 == row_bits:
        db.execute(f"DELETE FROM quantum_keys WHERE key_id = ? AND status = {AVAILABLE}",
                   (row_key_id,))
    else:
        db.execute(f"UPDATE quantum_keys SET key_data = ?, size_bits = ? WHERE key_id = ?"
                   f" AND status = {AVAILABLE}",
                   (seal(row_key_id, data[used:]), row_bits - used * 8, row_key_id))
    return keys


@dataclass(frozen=True, slots=True)
class Read:
    """What a read handed out, and the other copies of those keys by the LKM holding them
    (a key taken from a slice is also held, shipped, at its owner's home LKM)."""

    keys: list[Key]
    copies: dict[str, tuple[str, ...]]


ROWS = ("SELECT k.key_id, k.key_data, k.status, k.slave_sae_id, k.delivered_to_sae_id,"
        " k.shipped_to, p.home_lkm FROM quantum_keys k JOIN key_pools p ON p.sae_id = k.sae_id"
        " WHERE k.key_id IN ")


def slave_read(caller: str, master: str, key_ids: Sequence[str], now: float,
               master_home: str | None = None) -> Txn[list[Key]]:
    """:func:`read_once` under strict ETSI: the keys only."""
    read = read_once(caller, master, key_ids, now, master_home)

    def txn(db: sqlite3.Connection) -> list[Key]:
        return read(db).keys
    return txn


def read_once(caller: str, named: str, key_ids: Sequence[str], now: float,
              master_home: str | None = None, echo: bool = False) -> Txn[Read]:
    """Hand keys out exactly once, then erase them; all or none.

    Strict ETSI: the caller is the slave of every key, and ``named`` (the master in the path)
    took it here, or it was shipped to the LKM that is the master's home (``master_home``),
    whose slice served it. With ``echo`` (QuMail's profile) a key may also be read back once by
    its master, where it took it, with either party named in the path. Refuses, in this order:
    401 if any key has a slave (or, with ``echo``, a master) other than the caller; not found if
    any is unknown, not yet delivered, already read, or of other parties.
    """
    def txn(db: sqlite3.Connection) -> Read:
        wanted, part_ids = _parts(db, key_ids)
        if len(set(part_ids)) != len(part_ids):
            raise KeysNotFound()
        rows = fetchall(db, ROWS + f"({marks(len(part_ids))})", tuple(part_ids))
        found = {row[0]: row for row in rows}
        parties = slice(3, 5) if echo else slice(3, 4)  # (slave, master) or (slave,)
        if any(row[2] != KeyState.AVAILABLE and caller not in row[parties] for row in rows):
            raise Unauthorized("caller is not a slave SAE of the requested keys")
        if len(found) != len(part_ids) or not all(
                _readable(row, caller, named, master_home, echo) for row in rows):
            raise KeysNotFound()
        cursor = db.execute(
            f"UPDATE quantum_keys SET status = {CONSUMED}, key_data = NULL, consumed_at = ?,"
            " delivered_to_sae_id = COALESCE(delivered_to_sae_id, ?)"
            f" WHERE status IN ({DELIVERED}, {SHIPPED}) AND key_id IN ({marks(len(part_ids))})",
            (now, named, *part_ids))
        if cursor.rowcount != len(part_ids):
            raise KeysNotFound()
        unseal = sealer(db).open
        keys = [Key(key_id, join_parts([unseal(p, found[p][1]) for p in parts], bits))
                for key_id, (parts, bits) in wanted.items()]
        return Read(keys, _copies(rows) if echo else {})
    return txn


def _parts(db: sqlite3.Connection, key_ids: Sequence[str]
           ) -> tuple[dict[str, tuple[tuple[str, ...], int | None]], list[str]]:
    """Each key ID's stored parts (a composite ID names several), and all the parts."""
    plain = fetchall(db, f"SELECT key_id FROM quantum_keys WHERE key_id IN"
                         f" ({marks(len(key_ids))})", tuple(key_ids))
    known = {row[0] for row in plain}
    wanted = {key_id: ((key_id,), None) if key_id in known else split_composite(key_id)
              for key_id in key_ids}
    return wanted, [part for parts, _ in wanted.values() for part in parts]


def _readable(row: tuple[Any, ...], caller: str, named: str, master_home: str | None,
              echo: bool) -> bool:
    _, data, status, slave, master, shipped_to, _ = row
    if slave == caller and ((status == KeyState.DELIVERED and master == named) or (
            status == KeyState.SHIPPED and master_home is not None
            and shipped_to == master_home)):
        return True
    return (echo and status == KeyState.DELIVERED and master == caller and data is not None
            and named in (slave, caller))


def _copies(rows: Sequence[tuple[Any, ...]]) -> dict[str, tuple[str, ...]]:
    """Where else the keys of ``rows`` are held: shipped ones at the slice they were shipped
    to, a slice's at its owner's home."""
    copies: dict[str, list[str]] = {}
    for key_id, _, status, _, _, shipped_to, home_lkm in rows:
        elsewhere = shipped_to if status == KeyState.SHIPPED else home_lkm
        if elsewhere is not None:
            copies.setdefault(elsewhere, []).append(key_id)
    return {lkm: tuple(ids) for lkm, ids in copies.items()}


def mark_consumed(caller: str, key_id: str, now: float) -> Txn[Read]:
    """QuMail's ``mark_consumed``: erase a delivered key that is still unread, wherever it is
    held here (a composite ID: all its parts). Not found (404) if it is unknown, never handed
    out or already consumed; 401, changing nothing, if the caller is neither its master nor
    its slave. The keys of the reply are empty; its copies are those held elsewhere."""
    def txn(db: sqlite3.Connection) -> Read:
        _, part_ids = _parts(db, [key_id])
        rows = fetchall(db, ROWS + f"({marks(len(part_ids))})", tuple(part_ids))
        gone = NotFound("Key not found or already consumed", key_id=key_id)
        if len(rows) != len(set(part_ids)) or any(r[2] == KeyState.AVAILABLE for r in rows):
            raise gone
        if any(caller not in (r[3], r[4]) for r in rows):
            raise Unauthorized("only the master or the slave of a key may mark it consumed")
        live = [r for r in rows if r[2] != KeyState.CONSUMED]
        if not live:
            raise gone
        _consume(db, [r[0] for r in live], now)
        return Read([], _copies(live))
    return txn


def consume_copies(key_ids: Sequence[str], now: float) -> Txn[int]:
    """Erase this LKM's copies of keys read or marked consumed at another LKM; how many."""
    def txn(db: sqlite3.Connection) -> int:
        return _consume(db, key_ids, now)
    return txn


def _consume(db: sqlite3.Connection, key_ids: Sequence[str], now: float) -> int:
    cursor = db.execute(
        f"UPDATE quantum_keys SET status = {CONSUMED}, key_data = NULL, consumed_at = ?"
        f" WHERE status IN ({DELIVERED}, {SHIPPED}) AND key_id IN ({marks(len(key_ids))})",
        (now, *key_ids))
    return cursor.rowcount
