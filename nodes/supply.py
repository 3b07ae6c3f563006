"""Where an LKM's key material comes from when it syncs.

The LKM only sees the :class:`KeySupply` protocol. On a single served node the next-door key
manager is stood in for by :class:`LocalKeySupply` (fresh random material, which an outage can take
down); in a simulated network the KM actor answers instead.
"""

from __future__ import annotations

from typing import Callable, Protocol

from nodes.errors import KMUnreachable


class KeySupply(Protocol):
    async def fetch(self, lkm_id: str, sae_id: str, count: int, key_bytes: int) -> list[bytes]:
        """``count`` keys of ``key_bytes`` for ``sae_id``'s pool; raises KMUnreachable."""
        ...


class LocalKeySupply:
    """Generates key material in-process from ``random_bytes`` (secrets, or a seeded RNG)."""

    def __init__(self, random_bytes: Callable[[int], bytes]) -> None:
        self._random_bytes = random_bytes
        self.up = True

    async def fetch(self, lkm_id: str, sae_id: str, count: int, key_bytes: int) -> list[bytes]:
        if not self.up:
            raise KMUnreachable()
        return [self._random_bytes(key_bytes) for _ in range(count)]
