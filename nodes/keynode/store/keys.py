"""Keys as the store hands them out: their lifecycle states, IDs, and keys made of stored keys.

A key row moves ``AVAILABLE -> DELIVERED -> CONSUMED`` at the LKM that holds it: the sender (the
master) takes it from the receiver's pool, then the receiver (the slave) reads it once and its
material is erased. At the receiver's home LKM a key reserved for a slice elsewhere is
``SHIPPED`` instead of delivered; the receiver still reads it there, once.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Sequence

from nodes.keynode.errors import BadRequest


class KeyState(enum.IntEnum):
    """``quantum_keys.status``; SQL is written with these values, never bare numbers."""

    AVAILABLE = 0
    DELIVERED = 1  # to the master, who took it from the receiver's pool
    CONSUMED = 2  # read once (by the slave; QuMail's profile: or its master), or marked; erased
    SHIPPED = 3  # reserved for a slice at another LKM; read here by its owner


@dataclass(frozen=True, slots=True)
class Key:
    key_id: str
    material: bytes

    def __repr__(self) -> str:  # never print key material
        return f"Key({self.key_id!r}, <{len(self.material)} bytes>)"


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
