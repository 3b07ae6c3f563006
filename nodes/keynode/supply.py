"""Where an LKM's key material comes from when it syncs: the LKM's port to the KM network.

The LKM only sees the :class:`KeySupply` protocol. On a single served node the next-door key
manager is stood in for by :class:`LocalKeySupply` (fresh random material, which an outage can
take down, and no network to relay slices over); in a simulated network the network room's
``KMNetwork`` answers instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

from nodes.keynode.errors import KMUnreachable
from nodes.keynode.store import Key


@dataclass(frozen=True, slots=True)
class Shipment:
    """Keys of ``owner``'s home pool at ``home_lkm``, relayed to a slice at ``to_lkm`` over
    ``route`` (KMs, the home side first), each hop having spent ``bits`` of link key. An LKM
    that cannot take them gives them back (:meth:`KeySupply.return_slice`)."""

    owner: str
    home_lkm: str
    to_lkm: str
    keys: tuple[Key, ...]
    route: tuple[str, ...] = ()
    bits: int = 0


class KeySupply(Protocol):
    async def fetch(self, lkm_id: str, sae_id: str, count: int, key_bytes: int,
                    provision: bool = False) -> list[bytes]:
        """Up to ``count`` keys of ``key_bytes`` for a home pool; raises KMUnreachable.
        ``provision`` marks a pool's first fill at registration."""
        ...

    async def fetch_slice(self, lkm_id: str, owner: str, home_lkm: str,
                          count: int) -> Shipment:
        """Up to ``count`` keys of ``owner``'s home pool at ``home_lkm``, relayed to ``lkm_id``;
        raises KMUnreachable (and then nothing was shipped or spent)."""
        ...

    async def return_slice(self, shipment: Shipment) -> None:
        """Undo a shipment its LKM could not take: the keys go back to their home pool and
        every hop gets its link key back."""
        ...

    async def consume_copies(self, lkm_id: str, to_lkm: str, key_ids: tuple[str, ...]) -> int:
        """Tell ``to_lkm`` that ``lkm_id`` consumed these keys, so it erases its copies (how
        many it erased); raises KMUnreachable."""
        ...


class LocalKeySupply:
    """Generates key material in-process from ``random_bytes`` (secrets, or a seeded RNG)."""

    def __init__(self, random_bytes: Callable[[int], bytes]) -> None:
        self._random_bytes = random_bytes
        self.up = True

    async def fetch(self, lkm_id: str, sae_id: str, count: int, key_bytes: int,
                    provision: bool = False) -> list[bytes]:
        if not self.up:
            raise KMUnreachable()
        return [self._random_bytes(key_bytes) for _ in range(count)]

    async def fetch_slice(self, lkm_id: str, owner: str, home_lkm: str,
                          count: int) -> Shipment:
        raise KMUnreachable("a single node has no KM network to relay slices over")

    async def return_slice(self, shipment: Shipment) -> None:
        """Nothing is ever shipped here."""

    async def consume_copies(self, lkm_id: str, to_lkm: str, key_ids: tuple[str, ...]) -> int:
        raise KMUnreachable("a single node has no other LKM to tell")
