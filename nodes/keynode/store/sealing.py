"""Key material sealed at rest under the node's master key (issue 21; decision 57).

With a master key (``NodeConfig.master_key``, from ``KEY_AT_REST_FILE`` or ``KEY_AT_REST``) every
``quantum_keys.key_data`` value is stored as ``nonce || AES-256-GCM(material) || tag``, a fresh
random 12-byte nonce per value and the row's key ID as associated data, so a copied database
file shows no key material and a value moved to another row does not open. Without one the
material is stored as it is, byte for byte as before.

The sealer rides on the SQLite connection (:class:`SealedConnection`), so the transaction
functions find it where they find everything else: :func:`sealer` gives the connection's, or
:data:`PLAIN` (which seals nothing). A file remembers whether it is sealed: a sealed one holds a
sealed check value in ``key_at_rest``, and :func:`check_master_key` refuses at open time a file
sealed under another key, a sealed file opened without a key, and a plain file opened with one.
Errors name the file and the variables, never a key.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from nodes.keynode.config import ConfigError

NONCE_BYTES = 12
#: the associated data and plaintext of the check value (no key row has this ID)
CHECK_ID, CHECK_PLAINTEXT = "qkdsim:key_at_rest", b"qkdsim key material at rest, v1"


class Sealer(Protocol):
    def seal(self, key_id: str, material: bytes) -> bytes: ...

    def open(self, key_id: str, stored: bytes) -> bytes: ...


class BrokenSeal(RuntimeError):
    """A stored value did not open: altered on disk, or moved from another row. The node's
    fault, not the caller's (a 503 to an HTTP client, the whole transaction rolled back)."""


class Plain:
    """No master key: material is stored as it is."""

    def seal(self, key_id: str, material: bytes) -> bytes:
        return material

    def open(self, key_id: str, stored: bytes) -> bytes:
        return bytes(stored)


class AesGcmSealer:
    """AES-256-GCM under the master key; the row's key ID is the associated data."""

    def __init__(self, master_key: bytes) -> None:
        self._aead = AESGCM(master_key)

    def __repr__(self) -> str:  # never print the key
        return "AesGcmSealer(<master key>)"

    def seal(self, key_id: str, material: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, material, key_id.encode())

    def open(self, key_id: str, stored: bytes) -> bytes:
        try:
            return self._aead.decrypt(stored[:NONCE_BYTES], stored[NONCE_BYTES:],
                                      key_id.encode())
        except InvalidTag:
            raise BrokenSeal(f"the stored material of {key_id} does not open under the master"
                             " key (altered, or moved from another row)") from None


PLAIN = Plain()


class SealedConnection(sqlite3.Connection):
    """A connection that carries the sealer of its file's key material."""

    sealer: Sealer = PLAIN


def sealer(db: sqlite3.Connection) -> Sealer:
    """The sealer of ``db``'s key material (:data:`PLAIN` on a plain connection)."""
    return getattr(db, "sealer", PLAIN)


def check_master_key(db: sqlite3.Connection, master_key: bytes | None) -> None:
    """Refuse a file sealed under another key or none, and a sealed file opened without its
    key; give a fresh file opened with a key its check value; attach the sealer to ``db``
    (a :class:`SealedConnection` whenever there is a key). Runs before the schema is made."""
    if master_key is None:
        if "key_at_rest" in _tables(db):
            raise ConfigError("its key material is sealed under a master key: set "
                              "KEY_AT_REST_FILE (or KEY_AT_REST) to open it")
        return
    assert isinstance(db, SealedConnection)
    aead = AesGcmSealer(master_key)
    db.execute("BEGIN IMMEDIATE")  # two connections opening a fresh file: one makes the check
    try:
        _check_or_create(db, aead)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    db.sealer = aead


def _check_or_create(db: sqlite3.Connection, aead: AesGcmSealer) -> None:
    tables = _tables(db)
    if "key_at_rest" in tables:
        [(check,)] = db.execute("SELECT check_value FROM key_at_rest").fetchall()
        try:
            aead.open(CHECK_ID, check)
        except BrokenSeal:
            raise ConfigError("KEY_AT_REST_FILE/KEY_AT_REST: not the master key its key "
                              "material is sealed under") from None
    elif "quantum_keys" in tables:
        raise ConfigError("it was written without a master key (its key material is not "
                          "sealed): open it without KEY_AT_REST_FILE/KEY_AT_REST")
    else:
        db.execute("CREATE TABLE key_at_rest (check_value BLOB NOT NULL)")
        db.execute("INSERT INTO key_at_rest VALUES (?)",
                   (aead.seal(CHECK_ID, CHECK_PLAINTEXT),))


def _tables(db: sqlite3.Connection) -> set[str]:
    return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
